//! With whom the user shares their position, and how precisely. Off until
//! the user turns it on; then only with the contacts on the allow list,
//! optionally coarsened (to about a kilometre, say) before it leaves the
//! phone.

use std::collections::HashSet;

use super::Location;

/// Metres per degree of latitude (and of longitude at the equator).
const METRES_PER_DEGREE: f64 = 111_320.0;

/// The user's sharing rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sharing {
    enabled: bool,
    allowed: HashSet<String>,
    precision_m: Option<f64>,
}

impl Sharing {
    /// Sharing on, with the contacts in `allowed` (`alice@example.test` or
    /// `sip:alice@example.test`), coarsened to about `precision_m` metres
    /// when given.
    pub fn with(allowed: impl IntoIterator<Item = String>, precision_m: Option<f64>) -> Sharing {
        Sharing {
            enabled: true,
            allowed: allowed.into_iter().map(|a| normalise(&a)).collect(),
            precision_m: precision_m.filter(|p| p.is_finite() && *p > 0.0),
        }
    }

    /// Whether the user shares their position at all.
    pub fn is_on(&self) -> bool {
        self.enabled
    }

    /// Whether `peer` (an address of record) may see our position.
    pub fn allows(&self, peer: &str) -> bool {
        self.enabled && self.allowed.contains(&normalise(peer))
    }

    /// What may leave the phone of `location`: snapped to a grid of about
    /// the precision, with the radius at least that.
    pub fn reduce(&self, location: &Location) -> Location {
        let Some(precision) = self.precision_m else {
            return location.clone();
        };
        let lat_step = precision / METRES_PER_DEGREE;
        let lat = ((location.lat / lat_step).round() * lat_step).clamp(-90.0, 90.0);
        let cos = lat.to_radians().cos().max(0.01);
        let lon_step = precision / (METRES_PER_DEGREE * cos);
        let lon = ((location.lon / lon_step).round() * lon_step).clamp(-180.0, 180.0);
        Location {
            lat,
            lon,
            radius_m: location.radius_m.max(precision),
            timestamp: location.timestamp.clone(),
        }
    }
}

/// `sip:Alice@Example.test;x` and `alice@example.test` name the same person.
fn normalise(aor: &str) -> String {
    let bare = aor
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim_start_matches("sips:")
        .trim_start_matches("sip:");
    let bare = bare.split([';', '?', '>']).next().unwrap_or_default();
    let (user, host) = bare.split_once('@').unwrap_or(("", bare));
    // Ports do not make another person.
    let host = host.split(':').next().unwrap_or(host);
    format!("{user}@{}", host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_until_turned_on_then_only_for_the_allowed() {
        assert!(!Sharing::default().allows("sip:bob@example.test"));
        let s = Sharing::with(["bob@example.test".to_owned()], None);
        assert!(s.allows("sip:bob@EXAMPLE.test;transport=tcp"));
        assert!(s.allows("<sip:bob@example.test:5060>"));
        assert!(!s.allows("sip:carol@example.test"));
        assert!(
            !s.allows("sip:Bob@example.test"),
            "user parts are case-sensitive"
        );
    }

    #[test]
    fn precision_reduction_moves_the_point_less_than_the_precision() {
        let s = Sharing::with(Vec::new(), Some(1000.0));
        let here = Location::new(48.208_49, 16.372_08, 5.0, None).unwrap();
        let coarse = s.reduce(&here);
        let dlat = (coarse.lat - here.lat) * METRES_PER_DEGREE;
        let dlon = (coarse.lon - here.lon) * METRES_PER_DEGREE * here.lat.to_radians().cos();
        let moved = (dlat * dlat + dlon * dlon).sqrt();
        assert!(
            moved <= 1000.0 * std::f64::consts::FRAC_1_SQRT_2 + 1.0,
            "{moved}"
        );
        assert_eq!(coarse.radius_m, 1000.0);
        // Nearby points land on the same grid point: the exact one is gone.
        let near = Location::new(48.208_6, 16.372_2, 5.0, None).unwrap();
        assert_eq!(s.reduce(&near).lat, coarse.lat);
    }
}
