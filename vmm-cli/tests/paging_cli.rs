//! `vmm run --paging` and `vmm bench --json --plot` from the command line.

use std::process::Command;

fn vmm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmm")).args(args).output().expect("run vmm")
}

#[test]
fn run_takes_a_paging_mode_and_rejects_unknown_ones() {
    for mode in ["native", "trapped", "pv"] {
        let out = vmm(&["run", "--image", "paging", "--paging", mode, "--cmdline", "test=workload pages=64"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{mode}: {stdout}");
        assert!(stdout.contains("pages=64 "), "{stdout}");
        assert!(stdout.contains("bad=0"), "{stdout}");
    }
    let out = vmm(&["run", "--paging", "shadow"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("native"));
}

#[test]
fn bench_json_has_the_pte_rows_and_plot_writes_an_svg() {
    let svg = std::env::temp_dir().join(format!("vmm-bench-{}.svg", std::process::id()));
    let out = vmm(&["bench", "--iters", "64", "--reps", "1", "--json", "--plot", svg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let recs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("one JSON array");
    let pte: Vec<&serde_json::Value> = recs.iter().filter(|r| r["op"] == "pte update").collect();
    assert_eq!(pte.len(), 12);
    for mode in ["native", "trapped", "pv"] {
        for batch in [1, 8, 64, 512] {
            assert!(pte.iter().any(|r| r["mode"] == mode && r["batch"] == batch), "{mode} {batch}");
        }
    }
    let pv512 = pte.iter().find(|r| r["mode"] == "pv" && r["batch"] == 512).unwrap();
    assert!(pv512["exits_per_op"].as_f64().unwrap() <= 1.0 / 32.0);
    let trapped = pte.iter().find(|r| r["mode"] == "trapped").unwrap();
    assert!(trapped["exits_per_op"].as_f64().unwrap() >= 1.0);
    let text = std::fs::read_to_string(&svg).expect("plot written");
    let doc = roxmltree::Document::parse(&text).expect("the plot is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).map(str::trim).collect();
    // A panel titled with each group's op, and a key entry per paging mode.
    for r in &recs {
        let op = r["op"].as_str().unwrap();
        assert!(texts.contains(&op), "no panel for {op:?}");
    }
    for mode in ["native", "trapped", "pv"] {
        assert!(texts.contains(&mode), "no line for {mode:?}");
    }
    let _ = std::fs::remove_file(svg);
}

/// A guest that floods the VMM with a multicall of 256 mmuext_ops over
/// 64K operations each, forever, is still stopped by `--timeout 1`: the
/// work per exit is bounded, so the watchdog is seen between exits. The
/// time bound is a liveness guard only (without the bound one exit alone
/// takes many seconds in a debug build).
#[test]
fn timeout_stops_a_guest_flooding_multicall_batches() {
    let started = std::time::Instant::now();
    let out = vmm(&[
        "run",
        "--image",
        "paging",
        "--paging",
        "pv",
        "--timeout",
        "1",
        // The flood does not watch control/shutdown: no grace to wait out.
        "--shutdown-grace",
        "0",
        "--cmdline",
        "test=flood n=65536 rounds=0",
    ]);
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("time limit"), "{stderr}");
    assert!(elapsed < std::time::Duration::from_secs(10), "took {elapsed:?}");
}
