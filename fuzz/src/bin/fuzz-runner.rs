//! `fuzz-runner <target|all> [--iters N] [--seed S] [--seeds-to DIR]`:
//! runs fuzz targets on the stable toolchain with the deterministic corpus
//! runner and prints executions per target (or, with `--seeds-to`, writes
//! the built-in seeds to `DIR/<target>/` as a libFuzzer corpus). A crashing input is written to
//! `fuzz-crash-<target>.bin` and the exit status is 1.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut iters = 100_000u64;
    let mut seed = 1u64;
    let mut names = Vec::new();
    let mut seeds_to: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let num = |v: Option<&String>| v.and_then(|s| s.replace('_', "").parse().ok());
        match a.as_str() {
            "--iters" => iters = num(it.next()).unwrap_or(iters),
            "--seed" => seed = num(it.next()).unwrap_or(seed),
            "--seeds-to" => seeds_to = it.next().cloned(),
            "all" => names.extend(pv_fuzz::targets::ALL.iter().map(|(n, _)| n.to_string())),
            other => names.push(other.to_string()),
        }
    }
    if names.is_empty() {
        let all: Vec<&str> = pv_fuzz::targets::ALL.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: fuzz-runner <target|all>... [--iters N] [--seed S]; targets: {}", all.join(" "));
        return ExitCode::from(2);
    }
    // Panics are expected to be reported, not printed per input.
    std::panic::set_hook(Box::new(|_| {}));
    for name in names {
        let Some(target) = pv_fuzz::targets::by_name(&name) else {
            eprintln!("error: no target '{name}'");
            return ExitCode::from(2);
        };
        if let Some(dir) = &seeds_to {
            // Writes the built-in seeds as a libFuzzer corpus instead.
            let dir = std::path::Path::new(dir).join(&name);
            let _ = std::fs::create_dir_all(&dir);
            for (i, s) in pv_fuzz::runner::seeds(&name).iter().enumerate() {
                let _ = std::fs::write(dir.join(format!("seed-{i}")), s);
            }
            continue;
        }
        let started = std::time::Instant::now();
        let stats = pv_fuzz::runner::run(target, &pv_fuzz::runner::seeds(&name), iters, seed);
        let secs = started.elapsed().as_secs_f64();
        println!("{name}: {} executions in {secs:.1} s ({:.0}/s), seed {seed}", stats.execs, stats.execs as f64 / secs);
        if let Some(input) = stats.crash {
            let path = format!("fuzz-crash-{name}.bin");
            let _ = std::fs::write(&path, &input);
            eprintln!("error: {name} panicked on an input ({} bytes), saved to {path}", input.len());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
