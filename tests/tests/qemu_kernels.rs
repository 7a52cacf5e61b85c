//! The real tracer on Debian kernels in qemu: x86_64 (kprobes available: the socket probes
//! must use them) and aarch64 (the arm64 tracer against the arm64 Go fixture, under
//! emulation). This machine's own kernel (no kprobes: the fallback) is covered by the other
//! integration tests. Needs `cargo xtask setup` (qemu, the kernels) and the artifacts
//! `cargo xtask test` builds; missing pieces fail, naming the command.

use tracer_it::qemu::{self, Arch, Report};

/// The trees of each trace (`trace …` header and its span lines).
fn traces(r: &Report) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in r.trees.lines() {
        if line.starts_with("trace ") {
            out.push(String::new());
        }
        if let Some(t) = out.last_mut() {
            t.push_str(line);
            t.push('\n');
        }
    }
    out
}

/// The trace whose root is the SERVER span of `path`.
fn trace_of(r: &Report, path: &str) -> String {
    let root = format!("url.path={path} ");
    traces(r)
        .into_iter()
        .find(|t| {
            t.lines()
                .nth(1)
                .is_some_and(|l| l.contains("[SERVER]") && l.contains(&root))
        })
        .unwrap_or_else(|| {
            panic!(
                "no trace rooted at a SERVER span of {path}; trees:\n{}\ntracer log:\n{}",
                r.trees, r.tracer_log
            )
        })
}

/// What every guest must show: its own Debian kernel, every request answered and traced
/// (server spans; for /call the frontend's CLIENT span with the backend's SERVER span, in
/// another process, under it), and a clean tracer exit after SIGINT.
fn assert_traced(r: &Report, arch: Arch) {
    let release = qemu::expected_release(arch).expect("cached kernel");
    assert_eq!(
        r.kernel_release, release,
        "the guest must run the Debian kernel"
    );
    assert_eq!(r.machine, arch.uname_m());
    assert!(
        r.errors.is_empty(),
        "guest errors: {:?}\ntracer log:\n{}\nconsole: {}",
        r.errors,
        r.tracer_log,
        r.console_log.display()
    );
    let codes: Vec<(&str, i32)> = r.requests.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    // busybox wget exits 1 on an HTTP error status.
    assert_eq!(
        codes,
        [
            (qemu::REQUESTS[0], 0),
            (qemu::REQUESTS[1], 1),
            (qemu::REQUESTS[2], 0)
        ]
    );

    let hello = trace_of(r, "/hello");
    assert!(hello.contains("http.response.status_code=200"), "{hello}");
    let failed = trace_of(r, "/status/503");
    assert!(
        failed.contains("http.response.status_code=503") && failed.contains("ERROR"),
        "{failed}"
    );
    let call = trace_of(r, "/call");
    let lines: Vec<&str> = call.lines().collect();
    let client = lines
        .iter()
        .position(|l| l.contains("[CLIENT]") && l.contains("url.full=http://127.0.0.1:8081/hello"))
        .unwrap_or_else(|| panic!("no CLIENT span for the call to /hello:\n{call}"));
    assert!(
        lines[client + 1..]
            .iter()
            .any(|l| l.contains("[SERVER]") && l.contains("url.path=/hello ")),
        "the callee's SERVER span must be under the CLIENT span:\n{call}"
    );
    assert_eq!(
        r.tracer_exit,
        Some(0),
        "the tracer must exit cleanly on SIGINT; log:\n{}",
        r.tracer_log
    );
}

#[test]
fn x86_64_debian_kernel_uses_kprobes() {
    let r = qemu::run(Arch::X86_64).expect("x86_64 guest");
    assert!(
        r.features.iter().any(|f| f == "feature kprobes: available"),
        "the Debian kernel has CONFIG_KPROBES=y: {:?}",
        r.features
    );
    let socket = r.socket_probes();
    assert!(
        socket.is_some_and(|l| l.starts_with("socket probes: kprobe")),
        "with kprobes available the socket probes must use them, got {socket:?}; log:\n{}",
        r.tracer_log
    );
    assert_traced(&r, Arch::X86_64);
    assert_propagation_fallback(&r);
}

/// Debian 12's 6.1 verifier gives up on the full client program (it reads the request's own
/// traceparent out of Go's Header map): the tracer must load the stand-in, say so, and keep
/// propagation to incoming requests (the traces above are still whole on the node).
fn assert_propagation_fallback(r: &qemu::Report) {
    let log = &r.tracer_log;
    let line = log
        .lines()
        .find(|l| l.contains("propagation: "))
        .unwrap_or_else(|| panic!("no propagation line:\n{log}"));
    if log.contains("verifier refused http_client ") {
        assert!(
            log.contains("using http_client_basic instead")
                && line.contains("propagation: incoming only"),
            "the fallback must be named and propagation limited to incoming requests:\n{log}"
        );
    } else {
        assert!(line.contains("propagation: sk_msg"), "{log}");
    }
}

#[test]
fn aarch64_debian_kernel_arm64_tracer() {
    let r = qemu::run(Arch::Aarch64).expect("aarch64 guest");
    assert!(
        r.features.iter().any(|f| f == "feature uprobes: available"),
        "{:?}",
        r.features
    );
    assert_traced(&r, Arch::Aarch64);
    assert_propagation_fallback(&r);
}
