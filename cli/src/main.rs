//! `locus`, the desktop command line of the Locus softphone. See
//! shared/CLI.md for the contract this follows.

mod args;
mod call;
mod demo;
mod devices;
mod friends;
mod output;
mod register;
mod sharing;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, ConfigError};
use output::Output;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad options or configuration file (exit status 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The phone could not start or stopped.
    #[error(transparent)]
    Phone(#[from] locus_core::PhoneError),
    /// The local test bed could not start.
    #[error(transparent)]
    Harness(#[from] locus_tests::HarnessError),
    /// The command's goal was not reached.
    #[error("{0}")]
    Failed(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("locus: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = Output::new(cli.json);
    let result = runtime.block_on(async {
        match cli.command {
            Command::Register { account, duration } => {
                register::run(account.into_config()?, duration, &out).await
            }
            Command::Call {
                target,
                account,
                duration,
                audio,
                dtmf,
                location,
            } => {
                call::call(
                    account.into_config()?,
                    &target,
                    duration,
                    audio.into_call_audio(),
                    dtmf,
                    location,
                    &out,
                )
                .await
            }
            Command::Answer {
                account,
                auto,
                duration,
                audio,
                location,
            } => {
                call::answer(
                    account.into_config()?,
                    auto,
                    duration,
                    audio.into_call_audio(),
                    location,
                    &out,
                )
                .await
            }
            Command::Demo { duration } => demo::run(duration, &out).await,
            Command::Friends {
                friends,
                account,
                location,
                duration,
            } => friends::run(account.into_config()?, &friends, location, duration, &out).await,
            Command::Devices => devices::run(cli.json),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Config(e)) => {
            eprintln!("locus: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("locus: {e}");
            ExitCode::FAILURE
        }
    }
}
