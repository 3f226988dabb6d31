//! Go reference-time layouts (`2006-01-02T15:04:05Z07:00`), as Packer's
//! `isotime` takes them, rendered with chrono. Times are UTC, so zone parts
//! render as `UTC`, `Z` or `+00:00`.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Go's `time.RFC3339`, `isotime`'s default layout.
pub const RFC3339: &str = "2006-01-02T15:04:05Z07:00";

const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Formats `t` with a Go layout string.
pub fn format(t: &DateTime<Utc>, layout: &str) -> String {
    let mut out = String::new();
    let mut rest = layout;
    while !rest.is_empty() {
        let (token, len) = next_token(rest);
        match token {
            Some(text) => out.push_str(&render(t, text)),
            None => out.push_str(&rest[..len]),
        }
        rest = &rest[len..];
    }
    out
}

/// The layout token at the start of `s` (Go's `nextStdChunk` rules), or
/// `None` and the length of one literal character.
fn next_token(s: &str) -> (Option<&'static str>, usize) {
    const TOKENS: [&str; 39] = [
        "January",
        "Jan",
        "Monday",
        "Mon",
        "MST",
        "2006",
        "002",
        "01",
        "02",
        "03",
        "04",
        "05",
        "06",
        "15",
        "1",
        "__2",
        "_2",
        "2",
        "3",
        "4",
        "5",
        "PM",
        "pm",
        "-07:00:00",
        "-070000",
        "-07:00",
        "-0700",
        "-07",
        "Z07:00:00",
        "Z070000",
        "Z07:00",
        "Z0700",
        "Z07",
        ".000000000",
        ".000000",
        ".000",
        ".999999999",
        ".999999",
        ".999",
    ];
    for token in TOKENS {
        if !s.starts_with(token) {
            continue;
        }
        let after = &s[token.len()..];
        // "Jan"/"Mon" followed by a lowercase letter are words, not tokens.
        if matches!(token, "Jan" | "Mon") && after.starts_with(|c: char| c.is_ascii_lowercase()) {
            continue;
        }
        // Fractions must not be followed by another digit.
        if token.starts_with('.') && after.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        return (Some(token), token.len());
    }
    let len = s.chars().next().map_or(1, char::len_utf8);
    (None, len)
}

fn render(t: &DateTime<Utc>, token: &str) -> String {
    let month = t.month0() as usize;
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    let nanos = t.nanosecond() % 1_000_000_000;
    match token {
        "January" => MONTHS[month].to_string(),
        "Jan" => MONTHS[month][..3].to_string(),
        "Monday" => DAYS[t.weekday().num_days_from_monday() as usize].to_string(),
        "Mon" => DAYS[t.weekday().num_days_from_monday() as usize][..3].to_string(),
        "MST" => "UTC".to_string(),
        "2006" => format!("{:04}", t.year()),
        "06" => format!("{:02}", t.year().rem_euclid(100)),
        "002" => format!("{:03}", t.ordinal()),
        "__2" => format!("{:>3}", t.ordinal()),
        "01" => format!("{:02}", t.month()),
        "1" => t.month().to_string(),
        "02" => format!("{:02}", t.day()),
        "_2" => format!("{:>2}", t.day()),
        "2" => t.day().to_string(),
        "15" => format!("{:02}", t.hour()),
        "03" => format!("{hour12:02}"),
        "3" => hour12.to_string(),
        "04" => format!("{:02}", t.minute()),
        "4" => t.minute().to_string(),
        "05" => format!("{:02}", t.second()),
        "5" => t.second().to_string(),
        "PM" => if t.hour() < 12 { "AM" } else { "PM" }.to_string(),
        "pm" => if t.hour() < 12 { "am" } else { "pm" }.to_string(),
        "-07:00:00" => "+00:00:00".to_string(),
        "-070000" => "+000000".to_string(),
        "-07:00" => "+00:00".to_string(),
        "-0700" => "+0000".to_string(),
        "-07" => "+00".to_string(),
        z if z.starts_with('Z') => "Z".to_string(),
        frac if frac.starts_with(".0") => {
            let digits = frac.len() - 1;
            let value = format!("{nanos:09}");
            format!(".{}", &value[..digits])
        }
        frac => {
            // ".999...": trailing zeros removed, nothing at all when zero.
            let digits = frac.len() - 1;
            let value = format!("{nanos:09}");
            let trimmed = value[..digits].trim_end_matches('0');
            if trimmed.is_empty() {
                String::new()
            } else {
                format!(".{trimmed}")
            }
        }
    }
}
