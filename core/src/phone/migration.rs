//! Which server the phone uses and when it leaves it, decided from what
//! the phone notices (sans-IO: the driver feeds it lists and failures with
//! the time, and carries out its decisions).
//!
//! - A failure of the current server (its flow closed, a keepalive lost,
//!   a registration timing out, refused, or answered 503) moves the phone to
//!   the best other server at once; the failed one is avoided for a while
//!   (for its Retry-After when it gave one). With no other server the
//!   registration's own fast retries carry on where it is.
//! - A new list from the discovery service: the current server `draining`
//!   (or gone from the list) moves the phone make-before-break; `down`, or
//!   failing health checks, moves it at once; its health coming back `up`
//!   after `down` makes the phone register again, since a restarted server
//!   may have lost its registrations and nothing else would tell us.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::discovery::choice;
use crate::discovery::{Health, ServerEntry, ServerList, ServerState};

use super::server::ServerTarget;

/// How long a server that failed is passed over when choosing another.
const AVOID: Duration = Duration::from_secs(30);

/// A listed server with the address it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Known {
    pub entry: ServerEntry,
    pub target: ServerTarget,
}

/// What the driver is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Register with `target` and send everything there.
    MoveTo {
        target: ServerTarget,
        make_before_break: bool,
        reason: String,
    },
    /// Register again with the current server now.
    Refresh { reason: String },
}

/// The server-choice state machine.
#[derive(Debug)]
pub(crate) struct Migration {
    current: ServerTarget,
    list: Option<ServerList>,
    known: Vec<Known>,
    avoid_until: HashMap<String, Instant>,
    /// The last list said the current server was failing its health checks.
    current_was_down: bool,
    rng: StdRng,
    decisions: VecDeque<Decision>,
}

impl Migration {
    /// Starts on `current`.
    pub fn new(current: ServerTarget, seed: u64) -> Migration {
        Migration {
            current,
            list: None,
            known: Vec::new(),
            avoid_until: HashMap::new(),
            current_was_down: false,
            rng: StdRng::seed_from_u64(seed),
            decisions: VecDeque::new(),
        }
    }

    /// The server in use.
    pub fn current(&self) -> &ServerTarget {
        &self.current
    }

    /// The best server of `known` (ranked by state, health, priority and
    /// weight), for choosing where to start.
    pub fn best(list: &ServerList, known: &[Known], seed: u64) -> Option<ServerTarget> {
        let mut rng = StdRng::seed_from_u64(seed);
        choice::ranked(list, &mut rng)
            .into_iter()
            .find_map(|e| known.iter().find(|k| k.entry.id == e.id))
            .map(|k| k.target.clone())
    }

    /// A new list from discovery (the service, the remembered list or DNS).
    pub fn handle_list(&mut self, now: Instant, list: ServerList, known: Vec<Known>) {
        self.list = Some(list);
        self.known = known;
        let Some(entry) = self.current_entry().cloned() else {
            // Taken out of the list: leave, but it may still work.
            return self.move_on(now, true, "the server left the discovery list");
        };
        match (entry.state, entry.health) {
            (ServerState::Down, _) => {
                self.avoid(now, AVOID);
                self.move_on(now, false, "the server is down (discovery)");
            }
            (ServerState::Draining, _) => {
                self.move_on(now, true, "the server is draining for a migration")
            }
            (ServerState::Active, Health::Down) => {
                self.current_was_down = true;
                self.avoid(now, AVOID);
                self.move_on(now, false, "the server fails its health checks");
            }
            (ServerState::Active, Health::Up) if self.current_was_down => {
                self.current_was_down = false;
                self.decisions.push_back(Decision::Refresh {
                    reason: "the server is back; it may have lost our registration".into(),
                });
            }
            (ServerState::Active, Health::Up | Health::Unknown) => {}
        }
    }

    /// The current server failed; `retry_after` is what a 503 asked for.
    pub fn handle_failure(&mut self, now: Instant, reason: &str, retry_after: Option<Duration>) {
        self.avoid(now, retry_after.unwrap_or(AVOID));
        self.move_on(now, false, reason);
    }

    /// The network changed: old failures may have been the network's.
    pub fn handle_network_changed(&mut self) {
        self.avoid_until.clear();
        self.decisions.push_back(Decision::Refresh {
            reason: "the network changed".into(),
        });
    }

    /// The driver moved to `target`.
    pub fn moved(&mut self, target: ServerTarget) {
        self.current = target;
        self.current_was_down = self
            .current_entry()
            .is_some_and(|e| e.health == Health::Down);
    }

    /// The next decision to carry out.
    pub fn poll_decision(&mut self) -> Option<Decision> {
        self.decisions.pop_front()
    }

    fn current_entry(&self) -> Option<&ServerEntry> {
        self.known
            .iter()
            .find(|k| same_server(&k.target, &self.current))
            .map(|k| &k.entry)
    }

    fn avoid(&mut self, now: Instant, how_long: Duration) {
        self.avoid_until
            .insert(self.current.label.clone(), now + how_long);
    }

    /// Decides a move to the best server other than the current one that
    /// is fit (active, not failing) and not avoided; stays otherwise.
    fn move_on(&mut self, now: Instant, make_before_break: bool, reason: &str) {
        let Some(list) = &self.list else {
            return;
        };
        self.avoid_until.retain(|_, until| *until > now);
        let next = choice::ranked(list, &mut self.rng)
            .into_iter()
            .filter(|e| choice::is_fit(e))
            .filter_map(|e| self.known.iter().find(|k| k.entry.id == e.id))
            .map(|k| &k.target)
            .find(|t| !same_server(t, &self.current) && !self.avoid_until.contains_key(&t.label))
            .cloned();
        match next {
            Some(target) => {
                tracing::info!(from = %self.current.label, to = %target.label, %reason, "moving");
                self.decisions.push_back(Decision::MoveTo {
                    target,
                    make_before_break,
                    reason: reason.to_owned(),
                });
            }
            // Said at every failed retry; the registration's events tell the story.
            None => {
                tracing::debug!(server = %self.current.label, %reason, "no other server to move to")
            }
        }
    }
}

fn same_server(a: &ServerTarget, b: &ServerTarget) -> bool {
    a.transport == b.transport && a.addr == b.addr
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;

    fn target(n: u8) -> ServerTarget {
        ServerTarget {
            transport: Transport::Tcp,
            addr: format!("127.0.0.{n}:5060").parse().unwrap(),
            label: format!("sip:127.0.0.{n}:5060;transport=tcp"),
            tls_name: "example.test".into(),
        }
    }

    fn list(version: u64, servers: &[(u8, u16, ServerState, Health)]) -> (ServerList, Vec<Known>) {
        let entries: Vec<ServerEntry> = servers
            .iter()
            .map(|(n, priority, state, health)| ServerEntry {
                id: format!("s{n}"),
                uri: target(*n).label,
                priority: *priority,
                weight: 1,
                region: String::new(),
                state: *state,
                health: *health,
            })
            .collect();
        let known = entries
            .iter()
            .zip(servers)
            .map(|(e, (n, ..))| Known {
                entry: e.clone(),
                target: target(*n),
            })
            .collect();
        (
            ServerList {
                version,
                servers: entries,
            },
            known,
        )
    }

    const BOTH_UP: &[(u8, u16, ServerState, Health)] = &[
        (2, 10, ServerState::Active, Health::Up),
        (3, 20, ServerState::Active, Health::Up),
    ];

    fn feed(m: &mut Migration, now: Instant, servers: &[(u8, u16, ServerState, Health)]) {
        let (l, k) = list(1, servers);
        m.handle_list(now, l, k);
    }

    use {Health as H, ServerState as S};

    #[test]
    fn draining_moves_make_before_break_and_down_moves_at_once() {
        let t0 = Instant::now();
        let mut m = Migration::new(target(2), 1);
        feed(&mut m, t0, BOTH_UP);
        assert_eq!(m.poll_decision(), None);
        feed(
            &mut m,
            t0,
            &[(2, 10, S::Draining, H::Up), (3, 20, S::Active, H::Up)],
        );
        let Some(Decision::MoveTo {
            target: to,
            make_before_break: true,
            ..
        }) = m.poll_decision()
        else {
            panic!("expected a planned move")
        };
        assert_eq!(to, target(3));
        m.moved(to);
        // Back to active: we stay where we are (no flapping).
        feed(&mut m, t0, BOTH_UP);
        assert_eq!(m.poll_decision(), None);
        feed(
            &mut m,
            t0,
            &[(2, 10, S::Active, H::Up), (3, 20, S::Active, H::Down)],
        );
        assert!(matches!(
            m.poll_decision(),
            Some(Decision::MoveTo {
                make_before_break: false,
                ..
            })
        ));
    }

    #[test]
    fn a_server_back_from_down_gets_a_fresh_registration() {
        let t0 = Instant::now();
        let mut m = Migration::new(target(2), 1);
        feed(&mut m, t0, &[(2, 10, S::Active, H::Down)]);
        // Nowhere to go: stay.
        assert_eq!(m.poll_decision(), None);
        feed(&mut m, t0, &[(2, 10, S::Active, H::Up)]);
        assert!(matches!(m.poll_decision(), Some(Decision::Refresh { .. })));
        feed(&mut m, t0, &[(2, 10, S::Active, H::Up)]);
        assert_eq!(m.poll_decision(), None);
    }

    #[test]
    fn failures_skip_avoided_servers_until_their_time_is_up() {
        let t0 = Instant::now();
        let mut m = Migration::new(target(2), 1);
        feed(&mut m, t0, BOTH_UP);
        m.handle_failure(t0, "flow closed", None);
        let Some(Decision::MoveTo { target: to, .. }) = m.poll_decision() else {
            panic!("expected a move")
        };
        m.moved(to);
        // The secondary fails too; the primary is still avoided.
        m.handle_failure(t0 + Duration::from_secs(1), "timeout", None);
        assert_eq!(m.poll_decision(), None);
        m.handle_failure(t0 + Duration::from_secs(31), "timeout", None);
        let Some(Decision::MoveTo { target: to, .. }) = m.poll_decision() else {
            panic!("expected a move back")
        };
        assert_eq!(to, target(2));
        // A 503's Retry-After sets how long it is avoided.
        m.moved(to);
        m.handle_failure(
            t0 + Duration::from_secs(32),
            "503",
            Some(Duration::from_secs(2)),
        );
        assert_eq!(
            m.poll_decision(),
            None,
            "the secondary is avoided till 61 s"
        );
    }

    #[test]
    fn starts_on_the_best_server() {
        let (l, k) = list(
            1,
            &[
                (2, 20, S::Active, H::Up),
                (3, 10, S::Active, H::Up),
                (4, 1, S::Down, H::Up),
            ],
        );
        assert_eq!(Migration::best(&l, &k, 1), Some(target(3)));
    }
}
