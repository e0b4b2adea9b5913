//! Human forms: sizes (`1.5 MiB`), durations (`3.2 s`, `2d 4h`), times, aligned tables; and
//! parsing sizes (`512MiB`) and durations (`7d`) given on the command line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `1023 B`, `1.5 KiB`, `12.3 MiB`, `512 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `850 ns`, `12.5 µs`, `3.2 ms`, `3.2 s`, `4m 10s`, `3h 5m`, `2d 4h`.
pub fn duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let secs = d.as_secs();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if secs < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h {}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600)
    }
}

/// How long ago `t` was: `3.2 s ago`, `2d 4h ago`, `just now`.
pub fn ago(t: SystemTime, now: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(d) if d < Duration::from_secs(1) => "just now".to_string(),
        Ok(d) => format!("{} ago", duration(Duration::from_secs(d.as_secs()))),
        Err(_) => "in the future".to_string(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 in UTC, to the millisecond: `2026-11-21T13:49:02.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let ms = ms(t);
    let (days, rem) = (ms / 86_400_000, ms % 86_400_000);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// `2026-11-21 13:49:02 UTC`.
pub fn timestamp(t: SystemTime) -> String {
    let s = rfc3339(t);
    format!("{} {} UTC", &s[..10], &s[11..19])
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `74.1%`, or `-` when there is no ratio.
pub fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

/// Splits `text` into a number and the unit after it (whitespace between them allowed).
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    Some((value, unit.trim()))
}

/// Parses a size: a number and an optional unit, `B`, `KB`/`MB`/`GB`/`TB` (powers of 1000),
/// `KiB`/`MiB`/`GiB`/`TiB` or `K`/`M`/`G`/`T` (powers of 1024); units are case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("malformed size {text:?}: expected a number and a unit, like 512MiB, 1.5GB or 4096")
    };
    let (value, unit) = number_and_unit(text).ok_or_else(bad)?;
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "malformed size {text:?}: unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, \
                 GiB or TiB)"
            ));
        }
    };
    let bytes = value * factor;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size {text:?} is too large"));
    }
    if bytes.fract() != 0.0 {
        return Err(format!("size {text:?} is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// Parses a duration: one or more numbers with units, `ms`, `s`, `m` (minutes), `h`, `d`, `w`:
/// `7d`, `36h`, `1h30m`, `1.5h`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "malformed duration {text:?}: expected numbers with units (ms, s, m, h, d, w), like \
             7d, 12h or 1h30m"
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                format!("malformed duration {text:?}: a number needs a unit (s, m, h, d, w)")
            })?;
        let (num, after) = rest.split_at(num_end);
        let after = after.trim_start();
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let secs = match unit.to_ascii_lowercase().as_str() {
            "ms" => 1e-3,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "week" | "weeks" => 604_800.0,
            "" => {
                return Err(format!(
                    "malformed duration {text:?}: a number needs a unit (s, m, h, d, w)"
                ));
            }
            _ => {
                return Err(format!(
                    "malformed duration {text:?}: unknown unit {unit:?} (use ms, s, m, h, d or w)"
                ));
            }
        };
        total += value * secs;
        rest = next.trim_start();
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("duration {text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// An aligned text table: columns separated by two spaces, numbers right-aligned.
pub struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns: `(header, right-aligned)`.
    pub fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(n) {
                let pad = widths[i].saturating_sub(cell.chars().count());
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < n {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(512 << 20), "512 MiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("512 mib"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2k"), Ok(2048));
        for bad in [
            "",
            "MiB",
            "12XB",
            "-1",
            "1.5",
            ".5MiB",
            "1..2MiB",
            "99999999999TiB",
            "1e9",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_nanos(850)), "850 ns");
        assert_eq!(duration(Duration::from_micros(12_500)), "12.5 ms");
        assert_eq!(duration(Duration::from_millis(3_200)), "3.2 s");
        assert_eq!(duration(Duration::from_secs(250)), "4m 10s");
        assert_eq!(
            duration(Duration::from_secs(2 * 86_400 + 4 * 3600)),
            "2d 4h"
        );
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2 w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in ["", "7", "7x", "d", "h7", "1.h", "-1d", "99999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_269_342_123);
        assert_eq!(rfc3339(t), "2026-11-21T13:55:42.123Z");
        assert_eq!(timestamp(t), "2026-11-21 13:55:42 UTC");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            ago(t, t + Duration::from_secs(2 * 86_400 + 4 * 3600 + 5)),
            "2d 4h ago"
        );
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&[("NAME", false), ("SIZE", true), ("NOTE", false)]);
        t.row(vec!["a".into(), "1 B".into(), "".into()]);
        t.row(vec!["long name".into(), "12.5 KiB".into(), "x".into()]);
        assert_eq!(
            t.render(),
            "NAME           SIZE  NOTE\na               1 B\nlong name  12.5 KiB  x\n"
        );
    }
}
