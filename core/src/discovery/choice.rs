//! Which server to use: by operator state, health, priority and weight.

use rand::Rng;

use super::list::{Health, ServerEntry, ServerList, ServerState};

/// How suitable a server is, best first. An operator's `down` is final;
/// a failed health check is not (the phone may reach what the service
/// cannot), so such servers come last instead of never.
fn tier(s: &ServerEntry) -> Option<u8> {
    match (s.state, s.health) {
        (ServerState::Down, _) => None,
        (ServerState::Active, Health::Up | Health::Unknown) => Some(0),
        (ServerState::Draining, Health::Up | Health::Unknown) => Some(1),
        (ServerState::Active, Health::Down) => Some(2),
        (ServerState::Draining, Health::Down) => Some(3),
    }
}

/// Whether a phone on this server should stay: active and not known down.
pub fn is_fit(s: &ServerEntry) -> bool {
    tier(s) == Some(0)
}

/// The servers of `list` in the order to try them: by tier, then by
/// priority, and within a priority in a random order weighted as RFC 2782
/// orders SRV targets, so phones spread over equal servers.
pub fn ranked<'a>(list: &'a ServerList, rng: &mut impl Rng) -> Vec<&'a ServerEntry> {
    let mut usable: Vec<(u8, &ServerEntry)> = list
        .servers
        .iter()
        .filter_map(|s| tier(s).map(|t| (t, s)))
        .collect();
    usable.sort_by_key(|(t, s)| (*t, s.priority));
    let mut ranked = Vec::with_capacity(usable.len());
    for group in usable.chunk_by(|a, b| (a.0, a.1.priority) == (b.0, b.1.priority)) {
        let mut group: Vec<&ServerEntry> = group.iter().map(|(_, s)| *s).collect();
        while !group.is_empty() {
            let index = weighted_pick(&group, rng);
            ranked.push(group.remove(index));
        }
    }
    ranked
}

/// RFC 2782's selection: a running sum of weights against a random point;
/// weight 0 keeps a small chance.
fn weighted_pick(group: &[&ServerEntry], rng: &mut impl Rng) -> usize {
    let total: u32 = group.iter().map(|s| u32::from(s.weight)).sum();
    if total == 0 {
        return rng.random_range(0..group.len());
    }
    let point = rng.random_range(0..=total);
    let mut sum = 0;
    for (i, s) in group.iter().enumerate() {
        sum += u32::from(s.weight);
        if sum >= point && (s.weight > 0 || point == 0) {
            return i;
        }
    }
    group.len() - 1
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn entry(
        id: &str,
        priority: u16,
        weight: u16,
        state: ServerState,
        health: Health,
    ) -> ServerEntry {
        ServerEntry {
            id: id.into(),
            uri: format!("sip:{id}.example.test"),
            priority,
            weight,
            region: String::new(),
            state,
            health,
        }
    }

    fn ids(list: &ServerList, seed: u64) -> Vec<String> {
        let mut rng = StdRng::seed_from_u64(seed);
        ranked(list, &mut rng)
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }

    #[test]
    fn state_and_health_before_priority() {
        use {Health as H, ServerState as S};
        let list = ServerList {
            version: 1,
            servers: vec![
                entry("gone", 1, 1, S::Down, H::Up),
                entry("sick", 1, 1, S::Active, H::Down),
                entry("leaving", 1, 1, S::Draining, H::Up),
                entry("backup", 20, 1, S::Active, H::Unknown),
                entry("main", 10, 1, S::Active, H::Up),
            ],
        };
        assert_eq!(ids(&list, 1), ["main", "backup", "leaving", "sick"]);
        assert!(is_fit(&list.servers[4]) && !is_fit(&list.servers[2]));
    }

    #[test]
    fn equal_priorities_share_by_weight() {
        let list = ServerList {
            version: 1,
            servers: vec![
                entry("heavy", 10, 300, ServerState::Active, Health::Up),
                entry("light", 10, 100, ServerState::Active, Health::Up),
                entry("never-first", 10, 0, ServerState::Active, Health::Up),
            ],
        };
        let firsts: Vec<String> = (0..4000).map(|seed| ids(&list, seed)[0].clone()).collect();
        let heavy = firsts.iter().filter(|id| *id == "heavy").count();
        let zero = firsts.iter().filter(|id| *id == "never-first").count();
        assert!((2700..3300).contains(&heavy), "{heavy}");
        assert!(zero < 40, "{zero}");
        assert!((0..50).all(|seed| ids(&list, seed).len() == 3));
    }
}
