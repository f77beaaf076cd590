//! Child processes that cannot outlive the test: each runs in its own process group (so a kill
//! reaches anything it forks) with PR_SET_PDEATHSIG, and is killed when its handle drops.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Component;
use crate::error::{Error, Result};

type SpawnRequest = (Command, mpsc::SyncSender<std::io::Result<Child>>);

/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. Tokio
/// may retire the thread a cluster was started from (blocking-pool threads idle out), so every
/// fork happens on one thread that lives as long as the process.
fn spawn_on_long_lived_thread(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("muster-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(sender) = sender else {
        return Err(std::io::Error::other("could not start the spawner thread"));
    };
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    sender
        .send((command, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread dropped the request"))?
}

/// A running component process.
#[derive(Debug)]
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `binary args...` with stdout and stderr appended to `log`.
    pub fn spawn(component: Component, binary: &Path, args: &[String], log: &Path) -> Result<Proc> {
        Proc::spawn_env(binary, args, &[], log).map_err(|source| Error::Spawn {
            component,
            binary: binary.to_path_buf(),
            log: log.to_path_buf(),
            source,
        })
    }

    /// Like [`Proc::spawn`], with extra environment variables and no component (for processes
    /// that are not part of the control plane, e.g. job operators).
    pub fn spawn_env(
        binary: &Path,
        args: &[String],
        env: &[(&str, &OsStr)],
        log: &Path,
    ) -> std::io::Result<Proc> {
        let mut file: File = OpenOptions::new().create(true).append(true).open(log)?;
        // A marker per start: restarts append to the same file.
        writeln!(
            file,
            "=== muster-testcluster: {} {}",
            binary.display(),
            args.join(" ")
        )?;
        let stderr = file.try_clone()?;

        let parent = std::process::id() as libc::pid_t;
        let mut command = Command::new(binary);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .process_group(0);
        // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody would kill us.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = spawn_on_long_lived_thread(command)?;
        tracing::debug!(binary = %binary.display(), pid = child.id(), "started");
        Ok(Proc { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn signal_group(&self, signal: libc::c_int) {
        // The child leads its own process group (process_group(0)), so -pid reaches its forks.
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscall; a stale group only yields ESRCH.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }

    /// SIGKILL to the whole group, then reap.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            self.signal_group(libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    /// SIGTERM, wait up to `grace` for a clean exit, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                // Forks of the leader may linger in the group.
                self.signal_group(libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(log: &Path, lines: usize) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}
