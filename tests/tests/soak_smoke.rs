//! The soak (tests/examples/soak.rs, `cargo xtask soak`) shortened to 30 s for CI: the real
//! tracer on the Go fixture under the soak's bounded mixed load (stack growth, GC pressure,
//! outgoing calls), 100 % sampling, exporting to a real Jaeger. Asserts no crash, a clean
//! tracer exit, no failed request, the tracer's RSS growth after warm-up under a bound, the
//! in-flight map gauges small and not growing, and nothing lost or dropped.

#[path = "../examples/soak.rs"]
#[allow(dead_code)] // the example's `main` and its report writers
mod soak;

use std::time::Duration;

use tracer_it::{procstat::mib, workspace};

#[test]
fn thirty_second_soak_is_clean() {
    let opts = soak::Options {
        duration: Duration::from_secs(30),
        sample_every: Duration::from_secs(2),
        out_dir: workspace().join("target/soak/smoke"),
        ..soak::Options::default()
    };
    let report = soak::run(&opts).expect("set up the soak");
    let _ = report.write();
    eprintln!("{}", report.summary());

    assert!(report.crashes.is_empty(), "crashes: {:#?}", report.crashes);
    let (ok, failed) = report.requests();
    assert_eq!(failed, 0, "failed requests");
    assert!(ok >= 1000, "too little load: {ok} requests");
    let growth = report.rss_end().saturating_sub(report.rss_warm());
    assert!(
        growth <= opts.rss_growth_bound,
        "tracer RSS grew by {:.1} MiB after warm-up",
        mib(growth)
    );
    // The in-flight maps hold about what is in flight (a few requests per client), never
    // the traffic so far.
    for (i, (name, bound)) in [
        ("open_spans", 256.0),
        ("goroutine_parents", 4096.0),
        ("outbound_links", 256.0),
        ("keep_buffer_spans", 0.0),
        ("export_queue_spans", 2048.0),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(soak::GAUGES[i].0, name);
        let max = report.gauge_max(i);
        assert!(max <= bound, "{name} reached {max} (bound {bound})");
    }
    assert!(report.problems.is_empty(), "{}", report.summary());
}
