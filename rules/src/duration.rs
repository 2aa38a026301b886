//! Durations as written in config: `500ms`, `30s`, `15m`, `2h`, `1d`, combinations such as
//! `1h30m`, or a bare integer of seconds.

/// Parses a duration into milliseconds, or explains what is wrong.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<i64>() {
        return match secs {
            s if s < 0 => Err("a duration cannot be negative".into()),
            s if s > MAX_DURATION_MS / 1000 => Err("longer than 100 years".into()),
            s => Ok(s * 1000),
        };
    }
    let mut total: i64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let number: f64 = rest[..digits].parse().map_err(|_| format!("`{}` is not a number", &rest[..digits]))?;
        if number > 1e12 {
            return Err("longer than 100 years".into());
        }
        rest = rest[digits..].trim_start();
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c.is_whitespace()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let factor = match unit {
            "ms" => 1.0,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
            "h" | "hour" | "hours" => 3_600_000.0,
            "d" | "day" | "days" => 86_400_000.0,
            "" => return Err(format!("missing unit after `{number}`")),
            other => return Err(format!("unknown unit `{other}`")),
        };
        total += (number * factor).round() as i64;
        rest = rest[unit_len..].trim_start();
    }
    if total > MAX_DURATION_MS {
        return Err("longer than 100 years".into());
    }
    Ok(total)
}

/// Longest accepted duration (100 years): with event times bounded to years 1-9999, time
/// arithmetic in operators cannot overflow.
pub const MAX_DURATION_MS: i64 = 100 * 366 * 86_400_000;

/// A hint for a bad duration, e.g. `5 minuts` → "did you mean `5m`?".
pub fn duration_hint(text: &str) -> String {
    let digits: String = text.chars().take_while(|c| c.is_ascii_digit()).collect();
    let unit = text[digits.len()..].trim();
    let units = ["ms", "s", "m", "h", "d", "seconds", "minutes", "hours", "days"];
    match (digits.is_empty(), crate::diagnostic::did_you_mean(unit, units)) {
        (false, Some(u)) => {
            let short = match u {
                "seconds" => "s",
                "minutes" => "m",
                "hours" => "h",
                "days" => "d",
                other => other,
            };
            format!("did you mean `{digits}{short}`? Durations look like 500ms, 30s, 15m, 2h, 1d or 1h30m")
        }
        _ => "durations look like 500ms, 30s, 15m, 2h, 1d or 1h30m".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("15m"), Ok(900_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("2 hours"), Ok(7_200_000));
        assert_eq!(parse_duration("90"), Ok(90_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500));
    }

    #[test]
    fn explains_errors() {
        assert_eq!(parse_duration("5 minuts"), Err("unknown unit `minuts`".into()));
        assert_eq!(parse_duration("m5"), Err("expected a number at `m5`".into()));
        assert_eq!(parse_duration("-3"), Err("a duration cannot be negative".into()));
        assert_eq!(parse_duration("99999999999d"), Err("longer than 100 years".into()));
        assert_eq!(parse_duration("9223372036854775807"), Err("longer than 100 years".into()));
        assert!(duration_hint("5 minuts").starts_with("did you mean `5m`?"));
    }
}

/// A duration in milliseconds as the largest whole unit that fits (`90m`, `2h`, `1500ms`),
/// for messages.
pub fn format_ms(ms: i64) -> String {
    const UNITS: [(i64, &str); 5] = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")];
    UNITS
        .iter()
        .find(|&&(unit, _)| ms % unit == 0 && ms != 0)
        .map_or_else(|| format!("{ms}ms"), |&(unit, name)| format!("{}{name}", ms / unit))
}

#[cfg(test)]
mod format_tests {
    #[test]
    fn formats_in_the_largest_whole_unit() {
        assert_eq!(super::format_ms(2 * 3_600_000), "2h");
        assert_eq!(super::format_ms(90 * 60_000), "90m");
        assert_eq!(super::format_ms(1500), "1500ms");
        assert_eq!(super::format_ms(0), "0ms");
    }
}
