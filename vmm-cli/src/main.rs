//! `vmm`: boots a PV guest under KVM (`vmm run`) and measures it (`vmm bench`).

mod args;
mod bench;
mod commands;
mod config;
mod plot;

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let started = Instant::now();
    // Colour codes only for a terminal: logs piped to a file or a test
    // stay plain text.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VMM_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
    let res = match args::Cli::parse().cmd {
        args::Command::Run(a) => config::RunConfig::from_args(*a)
            .map_err(anyhow::Error::from)
            .and_then(|cfg| commands::run::run(cfg, started)),
        args::Command::Bench(b) => commands::bench::bench(b),
        args::Command::Images => Ok(commands::images::images()),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
