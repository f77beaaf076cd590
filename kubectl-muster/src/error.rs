//! Errors the user sees as one line (exit code 1).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("cannot reach the Kubernetes API server at {server}: {cause}")]
    Unreachable { server: String, cause: String },
    #[error("the API server at {server} refused to list {what}: {message} ({code})")]
    Api {
        server: String,
        what: String,
        code: u16,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Usage(String),
    #[error("writing the output: {0}")]
    Output(String),
}
