//! The one place the `cubby` CLI lays out tables and words times and sizes,
//! so every listing reads like docker's: column widths come from the
//! content (docker's tabwriter with padding 3), times are "5 minutes ago",
//! sizes "7.05MB".

use std::time::{SystemTime, UNIX_EPOCH};

/// Columns are at least this many spaces apart (docker's tabwriter padding).
const GAP: usize = 3;

/// A table buffered until printed, because widths depend on every row.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: ToString>(header: &[S]) -> Self {
        Table {
            rows: vec![header.iter().map(ToString::to_string).collect()],
        }
    }

    pub fn row<S: ToString>(&mut self, cells: &[S]) {
        self.rows
            .push(cells.iter().map(ToString::to_string).collect());
    }

    /// The laid-out text, one line per row, each ending in a newline; the
    /// last column is not padded so lines carry no trailing blanks.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; cols];
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count() + GAP;
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// Seconds since the Unix epoch now (0 if the clock is before 1970).
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Docker's wording of a duration (go-units HumanDuration): "Less than a
/// second", "About a minute", "5 minutes", "About an hour", "2 hours", ...
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let minutes = s / 60;
    // Hours round to nearest, as docker's does.
    let hours = (s + 1800) / 3600;
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", s / 3600 / 24 / 365),
    }
}

/// "5 minutes ago" for a Unix time.
pub fn ago(unix_secs: i64) -> String {
    format!("{} ago", human_duration(now_secs() - unix_secs))
}

/// "5 minutes ago" for an RFC 3339 timestamp; the text itself if it does
/// not parse (better shown raw than hidden).
pub fn ago_rfc3339(ts: &str) -> String {
    parse_rfc3339(ts).map_or_else(|| ts.to_string(), ago)
}

/// Unix seconds of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn parse_rfc3339(ts: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = ts.get(r)?;
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let seps = ts.as_bytes();
    if seps[4] != b'-' || seps[7] != b'-' || !matches!(seps[10], b'T' | b't' | b' ') {
        return None;
    }
    let mut rest = &ts[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's method).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Docker's size wording in tables (go-units HumanSize): decimal units, 3
/// significant digits, no trailing zeros: "1.2kB", "7.05MB", "512B".
pub fn human_size(bytes: u64) -> String {
    cubby_image::progress::human_size_digits(bytes, 3)
}

/// A container's published ports as docker's `ps` shows them, e.g.
/// `0.0.0.0:8080->80/tcp, 443/tcp`, from the API list's `Ports` array.
pub fn ports(list: &serde_json::Value) -> String {
    let Some(list) = list.as_array() else {
        return String::new();
    };
    let mut out: Vec<String> = list
        .iter()
        .filter_map(|p| {
            let private = p["PrivatePort"].as_u64()?;
            let proto = p["Type"].as_str().unwrap_or("tcp");
            Some(match p["PublicPort"].as_u64() {
                Some(public) if public != 0 => {
                    let ip = p["IP"].as_str().unwrap_or("0.0.0.0");
                    let ip = if ip.contains(':') {
                        format!("[{ip}]")
                    } else {
                        ip.to_string()
                    };
                    format!("{ip}:{public}->{private}/{proto}")
                }
                _ => format!("{private}/{proto}"),
            })
        })
        .collect();
    out.dedup();
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_follow_content_with_three_spaces() {
        let mut t = Table::new(&["ID", "IMAGE", "NAMES"]);
        t.row(&["abc", "registry.local:5000/some/long-image:tag", "web"]);
        t.row(&["abcdef", "x", ""]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        // IMAGE's column is as wide as its longest cell (39) plus 3.
        let image = "registry.local:5000/some/long-image:tag";
        assert_eq!(
            lines[0],
            format!("ID{}IMAGE{}NAMES", " ".repeat(7), " ".repeat(39 - 5 + 3))
        );
        assert_eq!(lines[1], format!("abc      {image}   web"));
        // An empty last cell leaves no trailing blanks.
        assert_eq!(lines[2], "abcdef   x");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut t = Table::new(&["A", "B"]);
        t.row(&["\"sh…\"", "x"]);
        assert_eq!(t.render().lines().nth(1), Some("\"sh…\"   x"));
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(-5), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(119), "About a minute");
        assert_eq!(human_duration(300), "5 minutes");
        assert_eq!(human_duration(3599), "59 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(2 * 3600), "2 hours");
        assert_eq!(human_duration(47 * 3600), "47 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(15 * 86400), "2 weeks");
        assert_eq!(human_duration(90 * 86400), "3 months");
        assert_eq!(human_duration(3 * 365 * 86400), "3 years");
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1200), "1.2kB");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(7_050_000), "7.05MB");
        assert_eq!(human_size(7_054_321), "7.05MB");
        assert_eq!(human_size(72_800_000), "72.8MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(9_999_000), "10MB");
        assert_eq!(human_size(1_500_000_000), "1.5GB");
    }

    #[test]
    fn rfc3339_parses() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-03-01T12:30:05.123456789Z"),
            Some(1_709_296_205)
        );
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("not a time"), None);
        assert_eq!(parse_rfc3339(""), None);
        assert_eq!(ago_rfc3339("garbage"), "garbage");
    }

    #[test]
    fn ports_read_like_docker() {
        let v = serde_json::json!([
            {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"PrivatePort": 443, "Type": "tcp"},
            {"IP": "::", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"}
        ]);
        assert_eq!(
            ports(&v),
            "0.0.0.0:8080->80/tcp, 443/tcp, [::]:5353->53/udp"
        );
        assert_eq!(ports(&serde_json::Value::Null), "");
    }
}
