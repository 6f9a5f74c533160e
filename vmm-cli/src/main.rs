//! `vmm`: boots a PV guest under KVM (`vmm run`) and measures it (`vmm bench`).

mod api;
mod args;
mod bench;
mod commands;
mod config;
mod plot;

use clap::{CommandFactory, FromArgMatches};
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
    let matches = args::Cli::command().get_matches();
    let cli = args::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let res = match cli.cmd {
        args::Command::Run(a) => {
            let run_matches = matches.subcommand_matches("run").cloned().unwrap_or_default();
            let print = a.print_config;
            config::RunConfig::from_command_line(*a, &run_matches).and_then(|cfg| match print {
                true => cfg.to_toml().map(|t| {
                    print!("{t}");
                    ExitCode::SUCCESS
                }),
                false => commands::run::run(cfg, started),
            })
        }
        args::Command::Ctl(c) => commands::ctl::ctl(c),
        args::Command::Restore(r) => commands::run::restore(r, started),
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
