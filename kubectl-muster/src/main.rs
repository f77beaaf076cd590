//! `kubectl muster`: Muster's view of GPUs and gangs, from the API server and the scheduler's
//! own planner (`muster-scheduler` as a library).

mod cli;
mod error;
mod load;
mod queues;
mod render;
mod scene;
#[cfg(test)]
mod testing;
mod views;

use clap::Parser;
use cli::{Cli, ColorChoice, Command, Output, Top};
use error::Error;
use load::Connection;
use render::{Rendered, Style};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kube_client=off")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn style(cli: &Cli) -> Style {
    let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let color = match cli.global.color {
        _ if cli.global.no_color => false,
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::io::stdout().is_terminal() && !no_color_env,
    };
    Style {
        color,
        mask_times: cli.global.mask_times,
    }
}

async fn run(cli: &Cli) -> Result<(), Error> {
    let style = style(cli);
    let conn = load::connect(&cli.global).await?;
    if !cli.global.watch {
        let (text, warnings) = once(cli, &conn, &style).await?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        return write_out(&text);
    }
    loop {
        let frame = match once(cli, &conn, &style).await {
            Ok((text, warnings)) => {
                let mut f = text;
                for w in warnings {
                    f.push_str(
                        &style.paint(&format!("warning: {w}\n"), Some(render::Color::Yellow)),
                    );
                }
                f
            }
            Err(e) => style.paint(&format!("error: {e}\n"), Some(render::Color::Red)),
        };
        let stamp = format!(
            "Every {:?}: kubectl muster (Ctrl-C to stop)\n\n",
            cli.global.interval
        );
        // Clear the screen and home the cursor, then the frame.
        write_out(&format!("\x1b[H\x1b[2J{stamp}{frame}"))?;
        tokio::select! {
            _ = tokio::time::sleep(cli.global.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn write_out(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // `kubectl muster top gpus | head`: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Output(e.to_string())),
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// One refresh: list, analyse, render. Returns the text and the warnings.
async fn once(cli: &Cli, conn: &Connection, style: &Style) -> Result<(String, Vec<String>), Error> {
    let g = &cli.global;
    let scene = load::scene(conn, now_secs()).await?;
    let analysis = scene.analyse();
    let wide = g.output == Output::Wide;
    let rendered = match &cli.command {
        Command::Top(Top::Nodes) => views::nodes::render(&scene, &analysis, wide, style),
        Command::Top(Top::Gpus { node }) => {
            views::gpus::render(&scene, &analysis, node.as_deref(), wide)?
        }
        Command::Top(Top::Jobs) => {
            let ns = (!g.all_namespaces).then_some(conn.namespace.as_str());
            views::jobs::render(&scene, &analysis, ns, wide, style)
        }
        Command::Top(Top::Queues) => views::queues::render(&analysis, wide),
        Command::Topo(t) => views::topo::render(&scene, &analysis, &t.node)?,
        Command::Explain(a) => {
            let target = views::explain::parse_target(&a.target)?;
            let (key, pod) = views::explain::resolve(&scene, &conn.namespace, &target)?;
            let mut events = Vec::new();
            if let Some(p) = pod.and_then(|p| p.metadata.name.as_deref()) {
                events.extend(load::events_of(conn, &key.namespace, "Pod", p).await);
            }
            events.extend(load::events_of(conn, &key.namespace, "PodGroup", &key.name).await);
            let e = views::explain::explain(&scene, &analysis, &key, pod, &events);
            let text = match g.output {
                Output::Table | Output::Wide => views::explain_text::text(&e, style),
                Output::Json | Output::Yaml => {
                    format_data(g.output, &views::explain_text::data(&e))?
                }
            };
            return Ok((text, scene.warnings));
        }
    };
    Ok((format(g.output, &rendered, style)?, scene.warnings))
}

fn format(output: Output, r: &Rendered, style: &Style) -> Result<String, Error> {
    match output {
        Output::Table | Output::Wide => {
            // A view with nothing to tabulate (`top queues` without queues) is its footer.
            let mut s = if r.table.headers.is_empty() {
                String::new()
            } else {
                r.table.render(style)
            };
            if !r.footer.is_empty() {
                if !r.footer[0].is_empty() && !s.is_empty() {
                    s.push('\n');
                }
                for l in &r.footer {
                    s.push_str(l);
                    s.push('\n');
                }
            }
            Ok(s)
        }
        Output::Json | Output::Yaml => format_data(output, &r.data),
    }
}

fn format_data(output: Output, data: &serde_json::Value) -> Result<String, Error> {
    match output {
        Output::Yaml => serde_yaml::to_string(data).map_err(|e| Error::Output(e.to_string())),
        _ => serde_json::to_string_pretty(data)
            .map(|s| s + "\n")
            .map_err(|e| Error::Output(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_without_a_table_prints_its_footer_only() {
        let s = testing::scene();
        let r = views::queues::render(&s.analyse(), false);
        let style = Style::default();
        assert_eq!(
            format(Output::Table, &r, &style).unwrap(),
            "no queues: every gang is planned in one queue (default)\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&format(Output::Json, &r, &style).unwrap()).unwrap();
        assert_eq!(json["kind"], "QueueList");
        assert_eq!(json["items"], serde_json::json!([]));
    }
}
