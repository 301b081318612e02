//! `locus-discovery --config servers.toml`: runs the discovery service.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use locus_discovery::config::Config;
use locus_discovery::registry::Registry;

/// The Locus discovery service.
#[derive(Debug, Parser)]
#[command(name = "locus-discovery", version)]
struct Args {
    /// TOML file listing the SIP servers.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Listen address (overrides the file's `listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Admin bearer token (overrides the file's `admin_token`).
    #[arg(long, env = "LOCUS_DISCOVERY_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("locus-discovery: {e}");
            return ExitCode::from(2);
        }
    };
    let listen = args.listen.unwrap_or(config.listen);
    let mut config = config;
    config.admin_token = args.admin_token.or(config.admin_token);
    let registry = Arc::new(Registry::new(&config.servers));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("locus-discovery: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(addr = %listener.local_addr()?, servers = config.servers.len(), "serving");
        locus_discovery::serve(listener, config, registry).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("locus-discovery: {e}");
            ExitCode::FAILURE
        }
    }
}
