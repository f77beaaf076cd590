//! The Katib services a katib-controller dials over gRPC, run on loopback from Katib's own Go
//! sources (same module and version as the controller):
//! - [`KatibDb`]: PostgreSQL (the machine's `postgres`/`initdb`, run as the `postgres` user, as
//!   PostgreSQL refuses root) and Katib's DB manager (`cmd/db-manager/v1beta1`, `DB_NAME=postgres`)
//!   in front of it on a free port: where metrics collectors or the training code push a trial's
//!   metrics and where the trial controller reads its observation.
//! - [`KatibSuggestion`]: Katib's Goptuna suggestion service (`cmd/suggestion/goptuna/v1beta1`:
//!   cmaes, tpe, random, sobol), the implementation behind the `suggestion-goptuna` image of
//!   the published katib-config. It listens on the hard-coded `0.0.0.0:6789`: one per machine
//!   at a time.
//!
//! Both die with the test (process groups killed on drop; PostgreSQL changes its user, which
//! clears the parent-death signal, so it outlives only a test process killed by SIGKILL).

use std::ffi::OsStr;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cluster::TestCluster;
use crate::error::{Context, Error, Result};
use crate::operators::build_async;
use crate::ports;
use crate::process::{Proc, log_tail};

/// Operator directories in tests/tools/operators.
pub const DB_MANAGER_NAME: &str = "katib-db-manager";
pub const GOPTUNA_NAME: &str = "katib-suggestion-goptuna";
/// The suggestion services' port (consts.DefaultSuggestionPort, fixed in their main.go).
pub const SUGGESTION_PORT: u16 = 6789;
/// The database user and database (Katib's defaults are `katib`/`katib`).
const DB_USER: &str = "katib";
const DB_DATABASE: &str = "postgres";

fn fail(name: &str, detail: impl Into<String>) -> Error {
    Error::Operator {
        name: name.into(),
        detail: detail.into(),
    }
}

/// Waits until 127.0.0.1:`port` accepts connections while `proc` runs.
async fn listening(
    name: &str,
    proc: &mut Proc,
    port: u16,
    log: &Path,
    deadline: Duration,
) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = proc.exited() {
            return Err(fail(
                name,
                format!(
                    "exited ({status}) before listening on {port}; log {}:\n{}",
                    log.display(),
                    log_tail(log, 20)
                ),
            ));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if started.elapsed() > deadline {
            return Err(fail(
                name,
                format!(
                    "not listening on {port} after {}s; log {}:\n{}",
                    deadline.as_secs(),
                    log.display(),
                    log_tail(log, 20)
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres"))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
        .ok_or_else(|| fail("postgres", "no postgres user in /etc/passwd"))
}

fn which(program: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/local/bin".into(), "/usr/lib/postgresql/15/bin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| fail("postgres", format!("{program} not found on PATH")))
}

/// PostgreSQL + Katib's DB manager; killed on drop.
pub struct KatibDb {
    db_manager: Proc,
    postgres: Proc,
    /// The DB manager's gRPC address, `127.0.0.1:<port>` (for [`super::KatibConfig::db_manager`]).
    pub address: String,
    pub postgres_port: u16,
    pub log: PathBuf,
    /// The data directory, removed after both processes are killed.
    _dir: tempfile::TempDir,
}

impl KatibDb {
    pub async fn start(cluster: &TestCluster) -> Result<Self> {
        let build = build_async(DB_MANAGER_NAME).await?;
        let (uid, gid) = postgres_user()?;
        // Not under the cluster's directory: PostgreSQL's user must reach it (0700 above).
        let tmp = tempfile::Builder::new()
            .prefix("katib-postgres-")
            .tempdir()
            .context("creating the PostgreSQL directory")?;
        let dir = tmp.path().to_path_buf();
        let data = dir.join("data");
        chown(&dir, Some(uid), Some(gid)).context(format!("chown {}", dir.display()))?;
        let logs = cluster.dir().join("logs");
        let pg_log = logs.join("katib-postgres.log");
        let as_postgres = |program: &str, args: &[String]| -> Result<(PathBuf, Vec<String>)> {
            let mut a = vec![
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
                which(program)?.display().to_string(),
            ];
            a.extend(args.iter().cloned());
            Ok((PathBuf::from("/usr/bin/setpriv"), a))
        };
        let (p, a) = as_postgres(
            "initdb",
            &[
                format!("--pgdata={}", data.display()),
                format!("--username={DB_USER}"),
                "--auth=trust".into(),
                "--encoding=UTF8".into(),
                "--no-sync".into(),
            ],
        )?;
        let mut init = Proc::spawn_env(&p, &a, &[], &pg_log)
            .map_err(|e| fail("postgres", format!("cannot run initdb: {e}")))?;
        let started = Instant::now();
        let status = loop {
            if let Some(s) = init.exited() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err(fail(
                    "postgres",
                    format!("initdb hangs; log {}", pg_log.display()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if !status.success() {
            return Err(fail(
                "postgres",
                format!("initdb failed ({status}):\n{}", log_tail(&pg_log, 20)),
            ));
        }
        let postgres_port = ports::free_port()?;
        let (p, a) = as_postgres(
            "postgres",
            &[
                format!("-D{}", data.display()),
                format!("-p{postgres_port}"),
                "-h127.0.0.1".into(),
                format!("-k{}", dir.display()),
                "-cfsync=off".into(),
            ],
        )?;
        let mut postgres = Proc::spawn_env(&p, &a, &[], &pg_log)
            .map_err(|e| fail("postgres", format!("cannot start postgres: {e}")))?;
        listening(
            "postgres",
            &mut postgres,
            postgres_port,
            &pg_log,
            Duration::from_secs(60),
        )
        .await?;

        let port = ports::free_port()?;
        let address = format!("127.0.0.1:{port}");
        let log = logs.join("katib-db-manager.log");
        let pg_port = postgres_port.to_string();
        let env: [(&str, &OsStr); 6] = [
            ("DB_NAME", "postgres".as_ref()),
            ("DB_USER", DB_USER.as_ref()),
            // Never empty: Katib formats `password=%s dbname=%s`, and with an empty password lib/pq
            // reads `dbname=...` as the password (the server trusts loopback, ignoring it).
            ("DB_PASSWORD", "katib".as_ref()),
            ("KATIB_POSTGRESQL_DB_HOST", "127.0.0.1".as_ref()),
            ("KATIB_POSTGRESQL_DB_PORT", pg_port.as_ref()),
            ("KATIB_POSTGRESQL_DB_DATABASE", DB_DATABASE.as_ref()),
        ];
        let mut db_manager = Proc::spawn_env(
            &build.binary(),
            &[
                format!("--listen-address={address}"),
                "--connect-timeout=60s".into(),
            ],
            &env,
            &log,
        )
        .map_err(|e| fail(DB_MANAGER_NAME, format!("cannot start: {e}")))?;
        listening(
            DB_MANAGER_NAME,
            &mut db_manager,
            port,
            &log,
            Duration::from_secs(90),
        )
        .await?;
        Ok(KatibDb {
            db_manager,
            postgres,
            address,
            postgres_port,
            log,
            _dir: tmp,
        })
    }

    /// The database's connection settings for `psql` (host, port, user, database).
    pub fn psql_args(&self) -> Vec<String> {
        vec![
            "-h127.0.0.1".into(),
            format!("-p{}", self.postgres_port),
            format!("-U{DB_USER}"),
            format!("-d{DB_DATABASE}"),
        ]
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for KatibDb {
    fn drop(&mut self) {
        self.db_manager.kill();
        self.postgres.kill();
    }
}

/// Katib's Goptuna suggestion service on 0.0.0.0:6789; killed on drop.
pub struct KatibSuggestion {
    proc: Proc,
    pub log: PathBuf,
}

impl KatibSuggestion {
    pub async fn start(cluster: &TestCluster) -> Result<Self> {
        let build = build_async(GOPTUNA_NAME).await?;
        if std::net::TcpListener::bind(("0.0.0.0", SUGGESTION_PORT)).is_err() {
            return Err(fail(
                GOPTUNA_NAME,
                format!("port {SUGGESTION_PORT} is taken (another suggestion service?)"),
            ));
        }
        let log = cluster
            .dir()
            .join("logs")
            .join(format!("{GOPTUNA_NAME}.log"));
        let mut proc = Proc::spawn_env(&build.binary(), &[], &[], &log)
            .map_err(|e| fail(GOPTUNA_NAME, format!("cannot start: {e}")))?;
        listening(
            GOPTUNA_NAME,
            &mut proc,
            SUGGESTION_PORT,
            &log,
            Duration::from_secs(30),
        )
        .await?;
        Ok(KatibSuggestion { proc, log })
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for KatibSuggestion {
    fn drop(&mut self) {
        self.proc.kill();
    }
}
