//! Command line: `kubectl muster <top|explain|topo> ...` with kubectl's usual flags.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-muster",
    bin_name = "kubectl muster",
    version,
    about = "Muster's view of GPUs and gangs: top nodes|gpus|jobs|queues, explain, topo"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// GPU and gang usage tables.
    #[command(subcommand)]
    Top(Top),
    /// Why a pod or gang waits, what blocks it and what would unblock it.
    Explain(ExplainArgs),
    /// A node's GPU link matrix in the `nvidia-smi topo -m` legend.
    Topo(TopoArgs),
}

#[derive(Debug, Subcommand)]
pub enum Top {
    /// Per node: GPUs allocated / total / healthy, utilization, memory, model, NVLink domain.
    Nodes,
    /// One row per GPU: owner pod, utilization, memory, temperature, power, health.
    Gpus {
        /// Only this node's GPUs.
        #[arg(long)]
        node: Option<String>,
    },
    /// One row per gang: members, GPUs, phase, waiting time, nodes.
    Jobs,
    /// One row per queue, children under parents: GPUs allocated, guaranteed, limit, borrowed,
    /// lent, pending and running gangs, share of its fair share.
    Queues,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// `pod/NAME`, `podgroup/NAME` (also `pg/`, `gang/`), or a bare NAME (pod first, then gang).
    pub target: String,
}

#[derive(Debug, Args)]
pub struct TopoArgs {
    /// The node (its `GpuNode`, else its machine fixture label).
    pub node: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns (the default).
    #[default]
    Table,
    /// More columns.
    Wide,
    Json,
    Yaml,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and NO_COLOR is unset.
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true)]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t)]
    pub output: Output,
    /// Refresh the view every --interval until interrupted.
    #[arg(short = 'w', long, global = true)]
    pub watch: bool,
    /// Refresh period of --watch (e.g. 2s, 500ms, 1m).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Colours: auto (terminal and no NO_COLOR), always, never.
    #[arg(long, global = true, value_enum, default_value_t)]
    pub color: ColorChoice,
    /// Same as --color never.
    #[arg(long, global = true)]
    pub no_color: bool,
    /// Timeout of each API request.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// A `spec.schedulerName` whose pods are Muster's; repeat as the scheduler's own
    /// `--scheduler-name` flags [default: muster].
    #[arg(long = "scheduler-name", global = true, value_name = "NAME")]
    pub scheduler_names: Vec<String>,
    /// Render every age and waiting time as `<t>` (stable output for tests and docs).
    #[arg(long, global = true, hide = true)]
    pub mask_times: bool,
}

/// `500ms`, `2s`, `1m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.');
    let (num, unit) = split.map_or((s, "s"), |i| s.split_at(i));
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 2s, 500ms or 1m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        return Err(format!("{s:?} must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kubectl() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("2d").is_err());
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "kubectl-muster",
            "top",
            "jobs",
            "-A",
            "-o",
            "wide",
            "--context",
            "lab",
        ])
        .unwrap();
        assert!(cli.global.all_namespaces);
        assert_eq!(cli.global.output, Output::Wide);
        assert_eq!(cli.global.context.as_deref(), Some("lab"));
        assert!(matches!(cli.command, Command::Top(Top::Jobs)));
        let cli =
            Cli::try_parse_from(["kubectl-muster", "-n", "ml", "explain", "pod/w-0"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("ml"));
        assert!(Cli::try_parse_from(["kubectl-muster", "top", "pods"]).is_err());
        let cli = Cli::try_parse_from(["kubectl-muster", "top", "queues", "-o", "json"]).unwrap();
        assert!(matches!(cli.command, Command::Top(Top::Queues)));
    }
}
