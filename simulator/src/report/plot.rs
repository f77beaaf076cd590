//! GPU allocation over time, one line per policy, as a small hand-written SVG.

use crate::run::Results;
use std::fmt::Write;

const W: f64 = 900.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const BINS: usize = 450;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// Time-weighted average of a step series over `bins` equal bins of [0, end).
pub fn bin(series: &[(u64, u32)], end: u64, bins: usize) -> Vec<f64> {
    let width = end.max(1) as f64 / bins as f64;
    let mut acc = vec![0.0; bins];
    for (i, &(t, v)) in series.iter().enumerate() {
        let next = series.get(i + 1).map_or(end, |s| s.0).min(end);
        let (mut a, b) = (t as f64, next as f64);
        while a < b {
            let k = ((a / width) as usize).min(bins - 1);
            let edge = ((k + 1) as f64 * width).min(b);
            acc[k] += (edge - a) * f64::from(v);
            if edge <= a {
                break;
            }
            a = edge;
        }
    }
    acc.iter().map(|x| x / width).collect()
}

pub fn svg(r: &Results) -> String {
    let gpus = r.cluster.gpus.max(1) as f64;
    let end = r
        .series
        .iter()
        .filter_map(|(_, s)| s.last().map(|x| x.0))
        .max()
        .unwrap_or(1)
        .max(1);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |t: f64| LEFT + pw * t / end as f64;
    let y = |share: f64| TOP + ph * (1.0 - share);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="14">GPU allocation over time, {} x {} ({} GPUs)</text>"#,
        r.cluster.nodes, r.cluster.topology, r.cluster.gpus
    );
    for k in 0..=4 {
        let share = f64::from(k) / 4.0;
        let yy = y(share);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}%</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            k * 25
        );
    }
    let days = end as f64 / 86400.0;
    let step = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        .into_iter()
        .find(|st| days / st <= 10.0)
        .unwrap_or(200.0);
    let mut d = 0.0;
    while d <= days {
        let xx = x(d * 86400.0);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{d}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 16.0
        );
        d += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">simulated days</text>"#,
        LEFT + pw / 2.0,
        H - 12.0
    );
    for (i, (name, series)) in r.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let own_end = series.last().map_or(0, |p| p.0);
        let bins = bin(series, end, BINS);
        let width = end as f64 / BINS as f64;
        let points: Vec<String> = bins
            .iter()
            .enumerate()
            .take_while(|(k, _)| (*k as f64) * width <= own_end as f64)
            .map(|(k, v)| format!("{:.1},{:.1}", x((k as f64 + 0.5) * width), y(v / gpus)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        let ly = TOP + 16.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            W - RIGHT - 120.0,
            W - RIGHT - 95.0,
            W - RIGHT - 88.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binning_is_time_weighted() {
        let b = bin(&[(0, 10), (50, 0)], 100, 2);
        assert_eq!(b, vec![10.0, 0.0]);
        let b = bin(&[(0, 0), (25, 8)], 100, 1);
        assert_eq!(b, vec![6.0]);
    }
}
