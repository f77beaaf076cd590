//! One error type whose messages are meant to be read by a person at a failed test: every
//! failure names the component and, where there is one, its log file.

use std::path::PathBuf;

use crate::Component;

/// Result alias used throughout the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A component exited or never became ready.
    #[error(
        "{component} did not become ready: {reason}\n  log file: {}\n--- last lines of the log ---\n{tail}",
        log.display()
    )]
    NotReady {
        component: Component,
        reason: String,
        log: PathBuf,
        tail: String,
    },

    /// A component's executable is absent or not executable.
    #[error("{component}: binary {} is missing or not executable ({hint})", path.display())]
    MissingBinary {
        component: Component,
        path: PathBuf,
        hint: String,
    },

    /// A requested loopback port is taken.
    #[error("{component}: port 127.0.0.1:{port} is already in use")]
    PortInUse { component: Component, port: u16 },

    /// `tests/tools/build.sh` failed (most often: no Go toolchain on PATH).
    #[error(
        "building the control-plane binaries with `bash {}` failed: {detail}",
        script.display()
    )]
    ToolsBuild { script: PathBuf, detail: String },

    /// A component could not be spawned at all (exec failure).
    #[error("{component}: could not start {}: {source}\n  log file: {}", binary.display(), log.display())]
    Spawn {
        component: Component,
        binary: PathBuf,
        log: PathBuf,
        source: std::io::Error,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    #[error("{context}: {source}")]
    Kube {
        context: String,
        source: kube::Error,
    },

    #[error("generating cluster certificates: {0}")]
    Cert(#[from] rcgen::Error),

    #[error(transparent)]
    Fixture(#[from] muster_api::machines::MachineError),

    #[error("scheduler configuration: {0}")]
    SchedulerConfig(String),

    /// Something installed into the cluster (an admission policy) did not take effect.
    #[error("setting up the cluster: {0}")]
    Setup(String),

    #[error("invalid node spec: {0}")]
    NodeSpec(String),

    /// A job operator (tests/tools/operators) could not be prepared or did not become ready.
    #[error("operator {name}: {detail}")]
    Operator { name: String, detail: String },

    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout { what: String, seconds: u64 },
}

/// Adds context to io and kube errors without a closure at every call site.
pub(crate) trait Context<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context.into(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, kube::Error> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Kube {
            context: context.into(),
            source,
        })
    }
}
