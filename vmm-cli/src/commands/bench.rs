//! `vmm bench`: runs every measurement and prints a table, or JSON, and
//! draws the plot.

use crate::args::BenchArgs;
use crate::bench::{self, BenchOpts};
use anyhow::Result;
use std::process::ExitCode;
use vmm::VmmError;

/// Runs the benchmarks `args` ask for.
pub fn bench(args: BenchArgs) -> Result<ExitCode> {
    if args.iters == 0 || args.reps == 0 {
        eprintln!("error: --iters and --reps must be at least 1");
        return Ok(ExitCode::from(2));
    }
    if !args.no_seccomp {
        vmm::seccomp::enable();
    }
    let wants = |op: &str| args.only.as_deref().is_none_or(|p| op.starts_with(p));
    // Before the main thread's filter: the net rows' namespace and TAP
    // device (only if a net row may run).
    let net_rows = args.only.as_deref().is_none_or(|p| p.starts_with("net") || "net".starts_with(p));
    let net = if net_rows { bench::net_setup() } else { None };
    let opts = BenchOpts { iters: args.iters, reps: args.reps };
    vmm::seccomp::install(vmm::seccomp::ThreadKind::Main).map_err(VmmError::from)?;
    let mut recs = bench::run_all(opts, args.only.as_deref())?;
    if let Some(n) = &net {
        recs.extend(bench::net_rows(opts, n)?.into_iter().filter(|r| wants(&r.op)));
    }
    if recs.is_empty() {
        eprintln!(
            "error: no benchmark's operation starts with {:?}: try `blk`, `event` or `net`",
            args.only.unwrap_or_default()
        );
        return Ok(ExitCode::from(2));
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, crate::plot::svg(&recs)?)
            .map_err(|e| anyhow::anyhow!("cannot write the plot to {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&recs)?);
    } else {
        print!("{}", bench::table(&recs));
    }
    Ok(ExitCode::SUCCESS)
}
