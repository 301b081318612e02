//! The `locus` binary against a real Kamailio: exit codes, stderr and the
//! JSON event contract of shared/CLI.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::process::{Command, Output};

use locus_tests::{Kamailio, KamailioConfig};
use serde_json::Value;

fn locus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_locus"))
        .args(args)
        .env_remove("LOCUS_PASSWORD")
        .output()
        .unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

#[test]
fn register_for_two_seconds_over_tcp() {
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let state = tempfile::tempdir().unwrap();
    let server = k.server_uri(locus_core::Transport::Tcp);
    let args = [
        "--json",
        "register",
        "--for",
        "2",
        "--user",
        "alice",
        "--domain",
        k.domain(),
        "--password",
        "alice-secret",
        "--server",
        &server,
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state.path().to_str().unwrap(),
    ];
    let out = locus(&args);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = json_lines(&out);
    let names: Vec<_> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["registered", "unregistered"], "{events:?}");
    assert_eq!(events[0]["server"], server.as_str());
    assert_eq!(events[0]["transport"], "tcp");
    assert!(events[0]["expires"].as_u64().unwrap() > 0);
    assert!(events[1]["t"].as_f64().unwrap() >= 2.0);
    assert!(k.contacts("alice").unwrap().is_empty());

    // The instance id persists: a second run registers the same instance.
    let files: Vec<_> = std::fs::read_dir(state.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "one state file");
}

#[test]
fn wrong_password_exits_1_with_one_line_on_stderr() {
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let server = k.server_uri(locus_core::Transport::Udp);
    let out = Command::new(env!("CARGO_BIN_EXE_locus"))
        .args([
            "--json",
            "register",
            "--for",
            "5",
            "--user",
            "alice",
            "--domain",
            k.domain(),
            "--server",
            &server,
        ])
        .env("LOCUS_PASSWORD", "wrong")
        .env("XDG_STATE_HOME", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let events = json_lines(&out);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "registration_failed");
    assert_eq!(events[0]["reason"], "auth");
    assert_eq!(events[0]["status"], 401);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("locus: "), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(locus(&["register", "--bogus"]).status.code(), Some(2));
    assert_eq!(
        locus(&["register", "--user", "a", "--domain", "d"])
            .status
            .code(),
        Some(2),
        "no password"
    );
}

#[test]
fn call_and_answer_as_two_processes() {
    let k = Kamailio::start(KamailioConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let said = dir.path().join("said.wav");
    let heard = dir.path().join("heard.wav");
    locus_tests::voice::write_voice_wav(&said, 3).unwrap();
    let server = k.server_uri(locus_core::Transport::Udp);
    let account = |user: &str, password: &str| -> Vec<String> {
        [
            "--user",
            user,
            "--domain",
            k.domain(),
            "--password",
            password,
            "--server",
            &server,
            "--listen",
            "127.0.0.1:0",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let state = dir.path().to_str().unwrap().to_owned();
    let answer = Command::new(env!("CARGO_BIN_EXE_locus"))
        .args([
            "--json",
            "answer",
            "--auto",
            "--for",
            "8",
            "--audio-out",
            heard.to_str().unwrap(),
            "--location",
            "-33.8688,151.2093,1500",
            "--state-dir",
            &state,
        ])
        .args(account("bob", "bob-secret"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bob must be registered before Alice calls.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while k.contacts("bob").unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "bob did not register");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let call = Command::new(env!("CARGO_BIN_EXE_locus"))
        .args([
            "--json",
            "call",
            "bob",
            "--for",
            "2",
            "--audio-in",
            said.to_str().unwrap(),
            "--dtmf",
            "42",
            "--location",
            "48.2085,16.3721,30",
            "--state-dir",
            &state,
        ])
        .args(account("alice", "alice-secret"))
        .output()
        .unwrap();
    assert!(
        call.status.success(),
        "call failed: {}",
        String::from_utf8_lossy(&call.stderr)
    );
    let events = json_lines(&call);
    let mut states: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "call_state")
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .collect();
    // `--auto` answers at once, so Bob's 180 and 200 leave together; two
    // Kamailio workers relay them to Alice's TCP connection and the 200 may
    // overtake the 180, which then belongs to a finished transaction. Either
    // order is a correct call.
    if states.get(1).map(String::as_str) == Some("ringing") {
        states.remove(1);
    }
    assert_eq!(states, ["calling", "connected", "ended"], "{events:?}");
    let stats = events
        .iter()
        .find(|e| e["event"] == "call_stats")
        .expect("call_stats");
    assert_eq!(stats["codec"], "opus");
    assert!(stats["mos"].as_f64().unwrap() > 4.0);
    // `--location` on the answer: the callee's position, sent once the call
    // is up, reaches the caller as a `call_location` event for that call.
    let connected = events
        .iter()
        .find(|e| e["event"] == "call_state" && e["state"] == "connected")
        .unwrap();
    let theirs = events
        .iter()
        .find(|e| e["event"] == "call_location")
        .unwrap_or_else(|| panic!("no call_location in {events:?}"));
    assert_eq!(theirs["call"], connected["call"]);
    assert_eq!(
        (
            &theirs["location"]["lat"],
            &theirs["location"]["lon"],
            &theirs["location"]["radius_m"]
        ),
        (
            &serde_json::json!(-33.8688),
            &serde_json::json!(151.2093),
            &serde_json::json!(1500.0)
        ),
        "{theirs}"
    );

    let answered = answer.wait_with_output().unwrap();
    assert!(answered.status.success());
    let events = json_lines(&answered);
    let incoming = events
        .iter()
        .find(|e| e["event"] == "incoming_call")
        .expect("incoming_call");
    assert!(incoming["from"].as_str().unwrap().starts_with("sip:alice@"));
    // `--location` on the call: shared with this callee, exactly.
    let location = &incoming["location"];
    assert_eq!(
        (&location["lat"], &location["lon"], &location["radius_m"]),
        (
            &serde_json::json!(48.2085),
            &serde_json::json!(16.3721),
            &serde_json::json!(30.0)
        ),
        "{incoming}"
    );
    assert!(location["timestamp"].as_str().unwrap().ends_with('Z'));
    let digits: String = events
        .iter()
        .filter(|e| e["event"] == "dtmf")
        .map(|e| e["digit"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(digits, "42", "{events:?}");
    let reader = hound::WavReader::open(&heard).unwrap();
    let seconds = f64::from(reader.duration()) / f64::from(reader.spec().sample_rate);
    assert!(seconds > 1.5, "bob recorded {seconds:.1} s");
}

#[test]
fn discovery_drain_is_a_server_changed_event() {
    use locus_core::discovery::ServerState;
    use locus_tests::discovery::{DiscoveryService, Listed};
    use std::time::Duration;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut primary = Kamailio::start(KamailioConfig::default()).unwrap();
    let mut secondary = Kamailio::start(KamailioConfig::default()).unwrap();
    primary.set_sibling(&secondary).unwrap();
    secondary.set_sibling(&primary).unwrap();
    let (from, to) = (
        primary.server_uri(locus_core::Transport::Tcp),
        secondary.server_uri(locus_core::Transport::Tcp),
    );
    let service = runtime
        .block_on(DiscoveryService::start_healthy(&[
            Listed::new("primary", from.clone(), 10),
            Listed::new("secondary", to.clone(), 20),
        ]))
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_locus"))
        .args([
            "--json", "register", "--for", "4", "--user", "alice", "--domain",
        ])
        .arg(primary.domain())
        .args([
            "--password",
            "alice-secret",
            "--listen",
            "127.0.0.1:0",
            "--discovery",
        ])
        .arg(&service.url)
        .arg("--state-dir")
        .arg(state.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    runtime
        .block_on(service.set_state("primary", ServerState::Draining))
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = json_lines(&out);
    let names: Vec<_> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["registered", "server_changed", "registered", "unregistered"],
        "{events:?}"
    );
    assert_eq!(events[0]["server"], from.as_str());
    assert_eq!(events[1]["from"], from.as_str());
    assert_eq!(events[1]["to"], to.as_str());
    assert!(events[1]["reason"].as_str().unwrap().contains("draining"));
    assert_eq!(events[2]["server"], to.as_str());
    // Make-before-break: the old binding is gone, the new one removed at exit.
    assert!(primary.contacts("alice").unwrap().is_empty());
    assert!(secondary.contacts("alice").unwrap().is_empty());
}

#[test]
fn friends_see_each_other_and_where_they_are() {
    let k = Kamailio::start(KamailioConfig {
        presence: true,
        ..KamailioConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = k.server_uri(locus_core::Transport::Tcp);
    let friends = |user: &str, friend: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_locus"))
            .args([
                "--json", "friends", friend, "--for", "6", "--user", user, "--domain",
            ])
            .arg(k.domain())
            .args(["--password", &format!("{user}-secret"), "--server", &server])
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.path().join(user))
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let alice = friends("alice", "bob", &[]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let bob = friends("bob", "alice", &["--location", "48.2085,16.3721,30"]);
    let (alice, bob) = (
        alice.wait_with_output().unwrap(),
        bob.wait_with_output().unwrap(),
    );
    assert!(alice.status.success() && bob.status.success());
    let seen = json_lines(&alice);
    let open = seen
        .iter()
        .find(|e| e["event"] == "friend" && e["status"] == "open")
        .unwrap_or_else(|| panic!("alice never saw bob open: {seen:?}"));
    assert_eq!(open["uri"], "sip:bob@example.test");
    assert_eq!(open["location"]["lat"], 48.2085);
    assert_eq!(open["location"]["radius_m"], 30.0);
    // Bob sees alice, who shares no position.
    let seen = json_lines(&bob);
    let open = seen
        .iter()
        .find(|e| e["event"] == "friend" && e["status"] == "open")
        .unwrap_or_else(|| panic!("bob never saw alice open: {seen:?}"));
    assert!(open["location"].is_null(), "{open}");
}
