//! Free loopback ports, picked below Linux's ephemeral range (32768-60999) so that outgoing
//! connections (the components' own clients) can never sit on a port before its server binds
//! it; a process-wide set keeps two clusters in one test binary apart.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

use crate::Component;
use crate::error::{Error, Result};

const FIRST: u16 = 20000;
const LAST: u16 = 32767;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port no other cluster of this process was given and that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    let mut candidate = random_port();
    for _ in 0..1000 {
        candidate = if candidate >= LAST {
            FIRST
        } else {
            candidate + 1
        };
        if handed.contains(&candidate) || TcpListener::bind(("127.0.0.1", candidate)).is_err() {
            continue;
        }
        handed.insert(candidate);
        return Ok(candidate);
    }
    Err(Error::Io {
        context: format!("finding a free loopback port in {FIRST}-{LAST}"),
        source: std::io::Error::other("1000 candidates were all taken"),
    })
}

/// A starting point that differs between processes and calls (std's hasher keys are random).
fn random_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let hash = RandomState::new().hash_one(std::time::SystemTime::now());
    FIRST + (hash % u64::from(LAST - FIRST)) as u16
}

/// Checks that a port the caller asked for explicitly can be bound.
pub fn check_free(component: Component, port: u16) -> Result<()> {
    match TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(Error::PortInUse { component, port })
        }
        Err(e) => Err(Error::Io {
            context: format!("{component}: binding 127.0.0.1:{port}"),
            source: e,
        }),
    }
}

/// Lets later clusters of this process reuse a torn-down cluster's ports.
pub fn release(ports: &[u16]) {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handed) = handed.as_mut() {
        for p in ports {
            handed.remove(p);
        }
    }
}
