//! Readiness probes: each component's health endpoint on loopback.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET http://127.0.0.1:<port><path>` with a tiny HTTP/1.0 client (etcd and kwok speak plain
/// HTTP on loopback); Ok(body) on a 200 answer.
pub async fn http_get(port: u16, path: &str) -> Result<String, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("no answer from 127.0.0.1:{port}{path} within 5s"))??;
    let status_ok = response
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    if status_ok {
        Ok(body)
    } else {
        Err(format!(
            "GET {path}: {}",
            response.lines().next().unwrap_or("empty response")
        ))
    }
}

/// `GET https://127.0.0.1:<port><path>`, trusting only the cluster CA (the secure ports of
/// kube-controller-manager and kube-scheduler serve the cluster's loopback certificate).
pub async fn https_get(port: u16, path: &str, ca_der: &[u8]) -> Result<String, String> {
    let url = format!("https://127.0.0.1:{port}")
        .parse()
        .map_err(|e| format!("bad url: {e}"))?;
    let mut config = kube::Config::new(url);
    config.root_cert = Some(vec![ca_der.to_vec()]);
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(5));
    let client = kube::Client::try_from(config).map_err(|e| format!("client: {e}"))?;
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| format!("request: {e}"))?;
    client
        .request_text(request)
        .await
        .map_err(|e| format!("GET {path}: {e}"))
}
