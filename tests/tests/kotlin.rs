//! The Kotlin layer on a JVM, against the host build of locus-ffi and a real
//! Kamailio: builds the cdylib, generates the uniffi Kotlin in library mode,
//! and runs the Maven build of android/locus with the server's address.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::path::{Path, PathBuf};
use std::process::Command;

use locus_core::Transport;
use locus_tests::discovery::{DiscoveryService, Listed};
use locus_tests::{Kamailio, KamailioConfig};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kotlin_phone_registers_through_rust_with_kamailio() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = target_dir();
    run(Command::new(&cargo).current_dir(workspace()).args([
        "build",
        "-q",
        "-p",
        "locus-ffi",
        "--lib",
        "--bins",
    ]));
    let library = target.join("debug").join(format!(
        "{}locus_ffi{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let sources = target.join("uniffi/kotlin");
    let _ = std::fs::remove_dir_all(&sources);
    run(Command::new(target.join("debug/uniffi-bindgen"))
        .current_dir(workspace().join("bindings"))
        .args([
            "generate",
            "--no-format",
            "--language",
            "kotlin",
            "--library",
        ])
        .arg(&library)
        .arg("--out-dir")
        .arg(&sources));

    let k = Kamailio::start(KamailioConfig {
        presence: true,
        ..KamailioConfig::default()
    })
    .unwrap();
    // For the migration test: a discovery service whose primary is `k`.
    let secondary = Kamailio::start(KamailioConfig::default()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let service = runtime
        .block_on(DiscoveryService::start_healthy(&[
            Listed::new("primary", k.server_uri(Transport::Tcp), 10),
            Listed::new("secondary", secondary.server_uri(Transport::Tcp), 20),
        ]))
        .unwrap();
    run(Command::new("mvn")
        .current_dir(workspace().join("android/locus"))
        .args(["-B", "-q", "test"])
        .arg(format!("-Dworkspace.target={}", target.display()))
        .env("LOCUS_TEST_SERVER", k.server_uri(Transport::Tcp))
        .env("LOCUS_TEST_DOMAIN", k.domain())
        .env("LOCUS_TEST_USER", "alice")
        .env("LOCUS_TEST_PASSWORD", "alice-secret")
        .env("LOCUS_TEST_PEER_USER", "bob")
        .env("LOCUS_TEST_PEER_PASSWORD", "bob-secret")
        .env("LOCUS_TEST_DISCOVERY", &service.url)
        .env("LOCUS_TEST_DISCOVERY_TOKEN", locus_tests::discovery::TOKEN)
        .env("LOCUS_TEST_DRAIN_SERVER", k.server_uri(Transport::Tcp)));
    assert!(
        k.contacts("alice").unwrap().is_empty(),
        "the Kotlin test unregistered"
    );
}
