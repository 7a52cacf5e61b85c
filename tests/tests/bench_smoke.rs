//! `cargo xtask bench` shortened for CI (~30 s): the benchmark harness in quick mode (2 short
//! rounds per mode, a short probe-cost pass, no Kraken, no peer build) on the Go fixture with
//! the real tracer. Checks the harness works — results.json with every mode and finite
//! numbers, the plots and the report written — and makes no timed assertion.

#[path = "../examples/bench.rs"]
#[allow(dead_code)] // the example's `main`
mod bench;

use std::time::Duration;

use tracer_it::workspace;

#[test]
fn quick_bench_writes_every_mode() {
    let opts = bench::Options {
        quick: true,
        rounds: 2,
        round_time: Duration::from_millis(1000),
        connections: 2,
        probe_calls: 20_000,
        probe_rounds: 1,
        kraken: false,
        kraken_rounds: 0,
        big_mb: 0,
        otel_auto_bin: None,
        out_dir: workspace().join("target/bench/smoke"),
    };
    let report = bench::run(&opts).expect("run the quick benchmark");
    eprintln!("{}", report.markdown);

    let text = std::fs::read_to_string(opts.out_dir.join("results.json")).expect("results.json");
    let j: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let ms = j["measurements"].as_array().expect("measurements");
    for mode in [
        bench::NONE,
        bench::OURS_10,
        bench::OURS_100,
        bench::OTEL_RECREATED,
    ] {
        let m = ms
            .iter()
            .find(|m| m["mode"] == mode)
            .unwrap_or_else(|| panic!("no measurement for {mode}"));
        assert_eq!(m["rounds"], 2, "{mode}");
        for k in ["p50_us", "p99_us", "rps", "cpu_per_req_us", "added_p50_us"] {
            let v = m[k].as_f64();
            assert!(v.is_some_and(f64::is_finite), "{mode}: {k} = {:?}", m[k]);
        }
        assert!(m["p50_us"].as_f64() > Some(0.0), "{mode}: p50");
        assert!(m["rps"].as_f64() > Some(0.0), "{mode}: rps");
        if mode != bench::NONE {
            // Every traced request hits the probes (ours: ServeHTTP + finishRequest).
            let hits = m["probe_hits_per_req"].as_f64().unwrap_or(0.0);
            assert!(hits >= 1.0, "{mode}: {hits} probe hits per request");
        }
        if mode == bench::OURS_10 || mode == bench::OURS_100 {
            assert!(
                m["tracer_rss_kb"].as_f64().is_some_and(|k| k > 0.0),
                "{mode}: tracer RSS"
            );
        }
    }
    let costs = j["probe_cost"].as_array().expect("probe_cost");
    assert_eq!(costs.len(), 5);
    assert!(
        costs
            .iter()
            .all(|c| c["ns_per_call"].as_f64().is_some_and(f64::is_finite))
    );
    assert!(j["derived"]["peer_added_over_ours"].as_f64().is_some());
    for png in [
        "bench-added-latency.png",
        "bench-latency.png",
        "bench-cdf.png",
    ] {
        let b = std::fs::read(opts.out_dir.join(png)).expect(png);
        assert!(b.starts_with(b"\x89PNG"), "{png} is no PNG");
    }
    assert!(report.markdown.contains("## Targets"));
    assert!(opts.out_dir.join("BENCHMARKS.md").exists());
}
