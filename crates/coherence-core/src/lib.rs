//! Coherence's pure algorithms, free of any PostgreSQL dependency.
//!
//! * [`detect`]: the seed's three detectors (variance escalation, spikes, trend) as mergeable
//!   streaming states with 0..1 risk scores.
//! * [`sim`]: the seeded "flight simulator" that produces the seed's demo scenario.
//! * [`rng`]: a small, portable, seedable PRNG so simulated data is identical everywhere.
//! * [`series`]: series keys with labels (`name{key="value",...}`, Prometheus' canonical text
//!   form) and their parse.
//!
//! Timestamps are `i64` microseconds since the Unix epoch throughout.

pub mod correlate;
pub mod detect;
pub mod events;
pub mod rng;
pub mod series;
pub mod sim;

/// Microseconds in one second.
pub const USEC_PER_SEC: i64 = 1_000_000;
/// Microseconds in one hour.
pub const USEC_PER_HOUR: i64 = 3_600 * USEC_PER_SEC;

/// Largest magnitude a detector accepts. Larger values (and NaN, ±Infinity) are skipped and
/// counted in `skipped`: their squares would overflow double precision, so no variance, z-score
/// or fit computed with them would mean anything. 1e100 is far beyond any real measurement.
pub const MAX_ABS_VALUE: f64 = 1e100;

/// Whether a detector uses `v` (finite and at most [`MAX_ABS_VALUE`] in magnitude).
#[inline]
pub fn usable_value(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_ABS_VALUE
}

/// Formats Unix microseconds as `YYYY-MM-DD HH:MM UTC` (proleptic Gregorian, no leap seconds).
pub fn format_utc_minute(us: i64) -> String {
    let secs = us.div_euclid(USEC_PER_SEC);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        sod / 3600,
        (sod % 3600) / 60
    )
}

/// Formats a duration in microseconds compactly: `45s`, `1m`, `1m30s`, `2h`, `2h5m`, `3d4h`
/// (rounded down to the second; sub-second durations as `0s`; negative as `0s`).
pub fn format_duration(us: i64) -> String {
    let s = us.max(0) / USEC_PER_SEC;
    let (d, h, m, sec) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    let parts = [(d, "d"), (h, "h"), (m, "m"), (sec, "s")];
    let first = parts.iter().position(|p| p.0 > 0);
    match first {
        None => "0s".into(),
        Some(i) => {
            let mut out = format!("{}{}", parts[i].0, parts[i].1);
            if let Some(n) = parts.get(i + 1).filter(|p| p.0 > 0) {
                out.push_str(&format!("{}{}", n.0, n.1));
            }
            out
        }
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000i64, -1, 0, 1, 10_957, 20_435, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
    }

    #[test]
    fn usable_values_exclude_overflowing_magnitudes() {
        assert!(usable_value(0.0) && usable_value(-1e100) && usable_value(1e100));
        assert!(!usable_value(1e101) && !usable_value(-1e308) && !usable_value(f64::NAN));
        assert!(!usable_value(f64::INFINITY));
    }

    #[test]
    fn formats_minutes() {
        // 2025-12-13 04:10:59 UTC
        let us = (days_from_civil(2025, 12, 13) * 86_400 + 4 * 3600 + 10 * 60 + 59) * USEC_PER_SEC;
        assert_eq!(format_utc_minute(us), "2025-12-13 04:10 UTC");
    }

    #[test]
    fn formats_durations_with_two_units_at_most() {
        let s = USEC_PER_SEC;
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(-5 * s), "0s");
        assert_eq!(format_duration(45 * s), "45s");
        assert_eq!(format_duration(60 * s), "1m");
        assert_eq!(format_duration(90 * s), "1m30s");
        assert_eq!(format_duration(2 * 3600 * s + 5 * 60 * s + 7 * s), "2h5m");
        assert_eq!(format_duration(3 * 86_400 * s + 4 * 3600 * s), "3d4h");
        assert_eq!(format_duration(86_400 * s + 30 * s), "1d");
    }
}
