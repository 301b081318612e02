//! Where a phone is, and with whom it may share that: PIDF-LO documents
//! (RFC 4119, RFC 5491 shapes) and the user's sharing rules.

pub mod pidf;
pub mod sharing;

/// Why a location could not be read or used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LocationError {
    /// The document is larger than we accept.
    #[error("location document of {0} bytes is too large")]
    TooLarge(usize),
    /// The document nests deeper than we accept.
    #[error("location document nests too deeply")]
    TooDeep,
    /// Not well-formed, or a required part is missing or wrong.
    #[error("malformed location: {0}")]
    Malformed(String),
    /// An element in a namespace it does not belong to.
    #[error("wrong namespace: {0}")]
    WrongNamespace(String),
    /// A shape or reference system we do not handle.
    #[error("unsupported location: {0}")]
    Unsupported(String),
    /// Coordinates outside WGS 84's range, or a negative radius.
    #[error("location out of range: {0}")]
    OutOfRange(String),
}

/// An RFC 3339 timestamp, e.g. `2026-11-22T04:00:00Z`, checked on parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp(String);

impl Timestamp {
    /// Checks `s` is an RFC 3339 date-time.
    pub fn parse(s: &str) -> Result<Timestamp, LocationError> {
        let bad = || LocationError::Malformed(format!("timestamp {s:?} is not RFC 3339"));
        let b = s.as_bytes();
        let digits = |range: std::ops::Range<usize>| {
            b.get(range)
                .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
        };
        let shape = b.len() >= 20
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && matches!(b[10], b'T' | b't')
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19);
        if !shape {
            return Err(bad());
        }
        let mut rest = &s[19..];
        if let Some(fraction) = rest.strip_prefix('.') {
            let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return Err(bad());
            }
            rest = &fraction[n..];
        }
        let zone = matches!(rest, "Z" | "z")
            || (rest.len() == 6
                && matches!(rest.as_bytes()[0], b'+' | b'-')
                && rest.as_bytes()[3] == b':'
                && rest[1..3]
                    .bytes()
                    .chain(rest[4..6].bytes())
                    .all(|d| d.is_ascii_digit()));
        if !zone {
            return Err(bad());
        }
        Ok(Timestamp(s.to_owned()))
    }

    /// Now, in UTC.
    pub fn now() -> Timestamp {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Timestamp(format_utc(secs))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (civil-from-days,
/// proleptic Gregorian).
fn format_utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A position in WGS 84 with its uncertainty.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Latitude in degrees, −90..=90.
    pub lat: f64,
    /// Longitude in degrees, −180..=180.
    pub lon: f64,
    /// Radius of uncertainty in metres; 0 for a point.
    pub radius_m: f64,
    /// When it was determined.
    pub timestamp: Option<Timestamp>,
}

impl Location {
    /// A location, checked for range.
    pub fn new(
        lat: f64,
        lon: f64,
        radius_m: f64,
        timestamp: Option<Timestamp>,
    ) -> Result<Location, LocationError> {
        if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
            return Err(LocationError::OutOfRange(format!("latitude {lat}")));
        }
        if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
            return Err(LocationError::OutOfRange(format!("longitude {lon}")));
        }
        // Half the Earth's circumference bounds any honest uncertainty.
        if !(radius_m.is_finite() && (0.0..=20_040_000.0).contains(&radius_m)) {
            return Err(LocationError::OutOfRange(format!("radius {radius_m} m")));
        }
        Ok(Location {
            lat,
            lon,
            radius_m,
            timestamp,
        })
    }

    /// Great-circle distance to `other` in metres (haversine on a sphere of
    /// the Earth's mean radius: within 0.5 %, far below any GPS radius).
    pub fn distance_m(&self, other: &Location) -> f64 {
        const EARTH_RADIUS_M: f64 = 6_371_008.8;
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
    }

    /// Whether this position tells someone who has `before` something new:
    /// it lies outside `before`'s circle of uncertainty (and at least
    /// [`MOVED_M`] away), or it is twice as precise or half as precise. A
    /// phone's fixes wander within their radius every second; those are
    /// not news.
    pub fn moved_from(&self, before: &Location) -> bool {
        let precision_changed =
            self.radius_m * 2.0 < before.radius_m || self.radius_m > before.radius_m * 2.0;
        self.distance_m(before) > before.radius_m.max(MOVED_M) || precision_changed
    }
}

/// The least distance worth telling a peer about, in metres.
pub const MOVED_M: f64 = 25.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_and_news() {
        let at = |lat, lon, radius| Location::new(lat, lon, radius, None).unwrap();
        // Vienna to Sydney: 15 966 km by great circle.
        let d = at(48.2085, 16.3721, 0.0).distance_m(&at(-33.8688, 151.2093, 0.0));
        assert!((d - 15_966_000.0).abs() < 50_000.0, "{d}");
        let here = at(48.2085, 16.3721, 30.0);
        // 0.0001° of latitude is about 11 m: inside the 30 m circle.
        assert!(!at(48.2086, 16.3721, 30.0).moved_from(&here));
        assert!(at(48.2090, 16.3721, 30.0).moved_from(&here), "56 m away");
        assert!(
            at(48.2085, 16.3721, 10.0).moved_from(&here),
            "3x more precise"
        );
        assert!(!at(48.2085, 16.3721, 0.0).moved_from(&at(48.2085, 16.37211, 0.0)));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        for good in [
            "2026-11-22T04:00:00Z",
            "2026-11-22T04:00:00.123+01:00",
            "1999-01-01t00:00:00z",
        ] {
            assert!(Timestamp::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T04:00:00",
            "2026-11-22T04:00:00+1",
            "yesterday",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_795_320_000), "2026-11-22T04:00:00Z");
        assert!(Timestamp::parse(Timestamp::now().as_str()).is_ok());
    }

    #[test]
    fn coordinates_are_checked() {
        assert!(Location::new(48.2, 16.37, 10.0, None).is_ok());
        for (lat, lon, r) in [
            (91.0, 0.0, 0.0),
            (0.0, -180.5, 0.0),
            (f64::NAN, 0.0, 0.0),
            (0.0, 0.0, -1.0),
        ] {
            assert!(Location::new(lat, lon, r, None).is_err(), "{lat} {lon} {r}");
        }
    }
}
