//! Tables, colours and units. Colour is decided once (terminal, NO_COLOR, --color); widths are
//! computed on the plain text so coloured and plain tables line up the same.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Red,
    Green,
    Yellow,
    Cyan,
    Dim,
    Bold,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Red => "31",
            Color::Green => "32",
            Color::Yellow => "33",
            Color::Cyan => "36",
            Color::Dim => "2",
            Color::Bold => "1",
        }
    }
}

/// How values are shown: colours on or off, ages real or masked.
#[derive(Clone, Copy, Debug, Default)]
pub struct Style {
    pub color: bool,
    pub mask_times: bool,
}

impl Style {
    pub fn paint(&self, text: &str, color: Option<Color>) -> String {
        match color {
            Some(c) if self.color && !text.is_empty() => {
                format!("\x1b[{}m{text}\x1b[0m", c.code())
            }
            _ => text.to_string(),
        }
    }

    /// A duration in kubectl's age style (`45s`, `5m12s`, `3h4m`, `2d3h`), or `<t>` when masked.
    pub fn age(&self, secs: i64) -> String {
        if self.mask_times {
            return "<t>".into();
        }
        age(secs)
    }
}

pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cell {
    pub text: String,
    pub color: Option<Color>,
}

impl Cell {
    pub fn new(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            color: None,
        }
    }

    pub fn colored(text: impl Into<String>, color: Option<Color>) -> Cell {
        Cell {
            text: text.into(),
            color,
        }
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::new(s)
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::new(s)
    }
}

/// Left-aligned columns separated by three spaces, like `kubectl get`.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Cell>) {
        self.rows.push(row);
    }

    pub fn render(&self, style: &Style) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.text.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<Cell> = self.headers.iter().map(|h| Cell::new(h.as_str())).collect();
        for (r, row) in std::iter::once(&header).chain(&self.rows).enumerate() {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).cloned().unwrap_or_default();
                let last = i + 1 == n;
                let color = if r == 0 {
                    Some(Color::Bold)
                } else {
                    cell.color
                };
                line.push_str(&style.paint(&cell.text, color));
                if !last {
                    let pad = w - cell.text.chars().count() + 3;
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A view's result: the table, lines under it, and the same data for `-o json|yaml`.
pub struct Rendered {
    pub table: Table,
    pub footer: Vec<String>,
    pub data: serde_json::Value,
}

pub fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// `a/b (p%)`.
pub fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        return format!("{a}/{b}");
    }
    format!("{a}/{b} ({:.1}%)", a as f64 * 100.0 / b as f64)
}

/// MiB as GiB, one decimal under 10 GiB.
pub fn gib(mib: i64) -> String {
    let g = mib as f64 / 1024.0;
    if g < 10.0 {
        format!("{g:.1}")
    } else {
        format!("{g:.0}")
    }
}

pub fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.0}%"))
}

/// Utilization colour: idle allocated capacity is what operators look for.
pub fn util_color(v: Option<f64>) -> Option<Color> {
    match v {
        Some(v) if v >= 70.0 => Some(Color::Green),
        Some(v) if v < 10.0 => Some(Color::Dim),
        Some(_) => Some(Color::Yellow),
        None => None,
    }
}

/// Joins up to `max` names, then `+N`.
pub fn list(names: &[String], max: usize) -> String {
    if names.is_empty() {
        return "-".into();
    }
    if names.len() <= max {
        return names.join(",");
    }
    format!("{},+{}", names[..max].join(","), names.len() - max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_with_and_without_colour() {
        let mut t = Table::new(&["NAME", "GPUS"]);
        t.push(vec![Cell::colored("a", Some(Color::Red)), "8/8".into()]);
        t.push(vec!["long-name".into(), "0/8".into()]);
        let plain = t.render(&Style::default());
        assert_eq!(
            plain,
            "NAME        GPUS\na           8/8\nlong-name   0/8\n"
        );
        let coloured = t.render(&Style {
            color: true,
            mask_times: false,
        });
        assert!(coloured.contains("\x1b[31ma\x1b[0m           8/8"));
        let stripped = coloured
            .replace("\x1b[31m", "")
            .replace("\x1b[1m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn units() {
        assert_eq!(age(45), "45s");
        assert_eq!(age(312), "5m12s");
        assert_eq!(age(3 * 3600 + 240), "3h4m");
        assert_eq!(age(2 * 86_400 + 3 * 3600), "2d3h");
        assert_eq!(ratio(40, 64), "40/64 (62.5%)");
        assert_eq!(gib(81_920), "80");
        assert_eq!(gib(5_120), "5.0");
        assert_eq!(list(&["a".into(), "b".into(), "c".into()], 2), "a,b,+1");
        let masked = Style {
            color: false,
            mask_times: true,
        };
        assert_eq!(masked.age(10), "<t>");
    }
}
