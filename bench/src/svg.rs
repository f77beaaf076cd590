//! Small hand-written SVG charts (like the simulator's allocation plot): lines over time and
//! grouped bars.

use std::fmt::Write;

const W: f64 = 900.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e",
];

/// A colour per series name, stable across plots.
fn color(name: &str, fallback: usize) -> &'static str {
    match name {
        "plain" => COLORS[0],
        "native" => COLORS[1],
        "coscheduling" => COLORS[2],
        "muster" => COLORS[3],
        _ => COLORS[4 + fallback % 2],
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" step giving about 5 ticks up to `max`.
fn step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn fmt_tick(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn header(s: &mut String, title: &str) {
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="14">{}</text>"#,
        esc(title)
    );
}

fn y_axis(s: &mut String, ymax: f64, label: &str) -> f64 {
    let ph = H - TOP - BOTTOM;
    let st = step(ymax);
    let top = (ymax / st).ceil().max(1.0) * st;
    let mut v = 0.0;
    while v <= top + 1e-9 {
        let y = TOP + ph * (1.0 - v / top);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            fmt_tick(v)
        );
        v += st;
    }
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        esc(label)
    );
    top
}

fn legend(s: &mut String, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let y = TOP + 10.0 + 20.0 * i as f64;
        let x = W - RIGHT + 15.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{:.1}" width="14" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            y - 9.0,
            color(name, i),
            x + 20.0,
            y,
            esc(name)
        );
    }
}

/// Lines over time: `series` is (name, points (x, y)).
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1.0f64, f64::max);
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(1.0f64, f64::max);
    let mut s = String::new();
    header(&mut s, title);
    let top = y_axis(&mut s, ymax, y_label);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let xst = step(xmax);
    let xtop = (xmax / xst).ceil().max(1.0) * xst;
    let mut v = 0.0;
    while v <= xtop + 1e-9 {
        let x = LEFT + pw * v / xtop;
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            H - BOTTOM + 16.0,
            fmt_tick(v)
        );
        v += xst;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 12.0,
        esc(x_label)
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    LEFT + pw * x / xtop,
                    TOP + ph * (1.0 - y / top)
                )
            })
            .collect();
        if !path.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                color(name, i),
                path.join(" ")
            );
        }
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    legend(&mut s, &names);
    s.push_str("</svg>\n");
    s
}

/// Grouped bars: one group per `groups` entry, one bar per series (name, value per group).
pub fn bars(
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[(String, Vec<f64>)],
) -> String {
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1e-9f64, f64::max);
    let mut s = String::new();
    header(&mut s, title);
    let top = y_axis(&mut s, ymax, y_label);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let gw = pw / groups.len().max(1) as f64;
    let bw = (gw * 0.8) / series.len().max(1) as f64;
    for (g, label) in groups.iter().enumerate() {
        let gx = LEFT + gw * g as f64 + gw * 0.1;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + gw * (g as f64 + 0.5),
            H - BOTTOM + 16.0,
            esc(label)
        );
        for (i, (name, values)) in series.iter().enumerate() {
            let v = values.get(g).copied().unwrap_or(0.0);
            let h = ph * v / top;
            let x = gx + bw * i as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                TOP + ph - h,
                bw * 0.9,
                color(name, i),
                x + bw * 0.45,
                TOP + ph - h - 3.0,
                if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            );
        }
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    legend(&mut s, &names);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed() {
        let l = lines(
            "t",
            "s",
            "gangs",
            &[("plain".into(), vec![(0.0, 0.0), (10.0, 5.0)])],
        );
        assert!(l.starts_with("<svg") && l.trim_end().ends_with("</svg>"));
        assert!(l.contains("polyline"));
        let b = bars(
            "t",
            "pods/s",
            &["k=1".into(), "k=8".into()],
            &[("muster".into(), vec![1.0, 2.0])],
        );
        assert_eq!(b.matches("<rect").count(), 1 + 2 + 1);
        assert_eq!(step(47.0), 10.0);
    }
}
