//! Host processes for the tests that run the chart's configuration on the harness cluster:
//! building `muster-scheduler`, free loopback ports, and children that die with the test.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};

/// A host process (muster-scheduler, kube-scheduler); killed on drop and with the test process.
pub struct HostProcess(pub Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl HostProcess {
    /// Spawns `cmd` so that it also dies when the test process does (PR_SET_PDEATHSIG).
    pub fn spawn(cmd: &mut Command, what: &str) -> HostProcess {
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                die_with_parent();
                Ok(())
            });
        }
        HostProcess(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("starting {what}: {e}")),
        )
    }
}

/// `cargo build -p muster-scheduler` from the working tree; the debug binary's path.
pub fn muster_scheduler_binary() -> PathBuf {
    muster_testcluster::build_workspace_binary("muster-scheduler", "muster-scheduler", false)
        .expect("building muster-scheduler")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn die_with_parent() {
    // PR_SET_PDEATHSIG = 1, SIGKILL = 9: the child dies with the test process.
    unsafe extern "C" {
        fn prctl(option: i32, ...) -> i32;
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG, SIGKILL) has no memory effects.
    unsafe {
        prctl(1, 9);
    }
}
