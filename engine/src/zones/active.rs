//! Active hours of a zone or rule: days of the week and a daily time range in a time zone.

use chrono::{Datelike, TimeZone, Timelike};
use chrono_tz::Tz;

use crate::time::Millis;

/// When a zone (or rule) applies: e.g. Monday–Friday 07:00–20:00 in Asia/Shanghai.
/// A range whose end is before its start runs past midnight (`22:00-06:00`); it belongs to
/// the day it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveWindow {
    /// Active days, Monday first.
    pub days: [bool; 7],
    /// Start, minutes after midnight.
    pub start_min: u32,
    /// End (exclusive), minutes after midnight; `start == end` means all day.
    pub end_min: u32,
    /// Time zone the hours are in.
    pub tz: Tz,
}

impl ActiveWindow {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse_hours(text: &str) -> Result<(u32, u32), String> {
        let (a, b) = text.split_once('-').ok_or_else(|| format!("`{text}` is not a range like 07:00-20:00"))?;
        Ok((parse_hhmm(a.trim())?, parse_hhmm(b.trim())?))
    }

    /// Parses a day name (`mon`, `tuesday`, …) to an index from Monday = 0.
    pub fn parse_day(text: &str) -> Option<usize> {
        let t = text.to_ascii_lowercase();
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].iter().position(|d| t.starts_with(d))
    }

    /// True if the window is active at event time `t`.
    pub fn is_active(&self, t: Millis) -> bool {
        let Some(local) = self.tz.timestamp_millis_opt(t).single() else { return true };
        let minute = local.hour() * 60 + local.minute();
        let day = local.weekday().num_days_from_monday() as usize;
        if self.start_min == self.end_min {
            return self.days[day];
        }
        if self.start_min < self.end_min {
            return self.days[day] && minute >= self.start_min && minute < self.end_min;
        }
        // Past midnight: the late part belongs to today, the early part to yesterday.
        if minute >= self.start_min {
            self.days[day]
        } else if minute < self.end_min {
            self.days[(day + 6) % 7]
        } else {
            false
        }
    }
}

fn parse_hhmm(s: &str) -> Result<u32, String> {
    let (h, m) = s.split_once(':').ok_or_else(|| format!("`{s}` is not a time like 07:30"))?;
    let h: u32 = h.parse().map_err(|_| format!("`{s}` is not a time like 07:30"))?;
    let m: u32 = m.parse().map_err(|_| format!("`{s}` is not a time like 07:30"))?;
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(format!("`{s}` is not a time of day"));
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_timestamp;

    fn window(days: &[usize], hours: &str, tz: &str) -> ActiveWindow {
        let (start_min, end_min) = ActiveWindow::parse_hours(hours).unwrap();
        let mut d = [false; 7];
        for &i in days {
            d[i] = true;
        }
        ActiveWindow { days: d, start_min, end_min, tz: tz.parse().unwrap() }
    }

    #[test]
    fn weekday_hours_in_a_time_zone() {
        let w = window(&[0, 1, 2, 3, 4], "07:00-20:00", "Asia/Shanghai");
        // 2026-11-23 is a Monday. 23:30Z Sunday = 07:30 Monday in Shanghai.
        assert!(w.is_active(parse_timestamp("2026-11-22T23:30:00Z").unwrap()));
        assert!(!w.is_active(parse_timestamp("2026-11-22T22:30:00Z").unwrap()), "06:30 local");
        assert!(!w.is_active(parse_timestamp("2026-11-23T12:00:00Z").unwrap()), "20:00 local is the exclusive end");
        assert!(!w.is_active(parse_timestamp("2026-11-28T02:00:00Z").unwrap()), "Saturday");
    }

    #[test]
    fn ranges_across_midnight_belong_to_the_starting_day() {
        // Friday and Saturday nights only, 22:00-06:00 UTC.
        let w = window(&[4, 5], "22:00-06:00", "UTC");
        assert!(w.is_active(parse_timestamp("2026-11-27T23:00:00Z").unwrap()), "Friday 23:00");
        assert!(w.is_active(parse_timestamp("2026-11-28T05:59:00Z").unwrap()), "Saturday 05:59 = Friday night");
        assert!(w.is_active(parse_timestamp("2026-11-29T03:00:00Z").unwrap()), "Sunday 03:00 = Saturday night");
        assert!(!w.is_active(parse_timestamp("2026-11-30T03:00:00Z").unwrap()), "Monday 03:00 = Sunday night");
        assert!(!w.is_active(parse_timestamp("2026-11-28T12:00:00Z").unwrap()), "midday");
        assert!(ActiveWindow::parse_hours("7-20").is_err());
        assert_eq!(ActiveWindow::parse_day("Tuesday"), Some(1));
    }
}
