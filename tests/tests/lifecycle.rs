//! Target lifecycle: a traced process exits (probes detached, one log line, the tracer exits 0
//! when nothing is left); `--follow-exe` re-attaches to new processes of the same executable
//! (restarts, upgrades, containers); a process in its own PID and mount namespace is traced by
//! its host PID; a cgo build is traced with correct fields; a binary whose struct offsets would
//! be guessed (stripped, Go version outside the table) is refused unless the user accepts it.
//!
//! Every test that follows an executable follows a private copy of the fixture (its own inode),
//! so processes of other tests running at the same time are never attached.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    thread,
    time::Duration,
};

use tracer_it::{
    Fixture, TracerProcess, fixture, gofixture, procstat, request, tracer_bin, wait_until,
};

const WAIT: Duration = Duration::from_secs(30);

/// `kraken-tracer attach ARGS` (the harness's `TracerProcess`), with this file's failure style:
/// panics carrying the tracer's log.
struct Tracer(TracerProcess);

impl Tracer {
    fn start(args: &[&str]) -> Tracer {
        Tracer(TracerProcess::spawn(args).expect("start kraken-tracer"))
    }

    fn log(&self) -> String {
        self.0.log_text()
    }

    fn out(&self) -> String {
        self.0.stdout_text()
    }

    /// Waits until the log holds `needle` (panics with the log otherwise, or if the tracer
    /// exited first).
    fn wait_log(&mut self, needle: &str) {
        if let Err(e) = self.0.wait_log(needle, WAIT) {
            panic!("{e:#}");
        }
    }

    fn running(&mut self) -> bool {
        self.0.running()
    }

    /// Waits for the tracer to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.0.wait_exit(timeout)
    }

    /// SIGTERM (unless it already exited), then its exit.
    fn stop(&mut self) -> ExitStatus {
        self.0.terminate().expect("stop kraken-tracer")
    }

    /// The self-metrics endpoint announced in the log.
    fn metrics_addr(&mut self) -> SocketAddr {
        procstat::metrics_addr(&mut self.0).expect("metrics address")
    }
}

/// One value of the self-metrics (`name` with its `_total` suffix for counters).
fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    procstat::scrape(addr, Duration::from_secs(5))
        .ok()?
        .get(name)
        .copied()
}

/// A private copy of a built fixture, in its own directory (removed on drop).
struct Copy {
    dir: PathBuf,
    path: PathBuf,
}

impl Copy {
    fn of(bin: &Path, name: &str) -> Copy {
        let dir = std::env::temp_dir().join(format!(
            "kraken-tracer-lifecycle-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::copy(bin, &path).unwrap();
        Copy { dir, path }
    }

    fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills a fixture and waits until the kernel has reaped it.
fn kill(mut fx: Fixture) {
    let _ = fx.child.kill();
    let _ = fx.child.wait();
}

#[test]
fn target_exit_detaches_once_and_the_tracer_exits_0() {
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    let pid = fx.pid;
    let mut tracer = Tracer::start(&[
        "--pid",
        &pid.to_string(),
        "--no-export",
        "--stdout",
        "--sample-ratio",
        "1",
    ]);
    tracer.wait_log(&format!("attached pid {pid} "));
    assert_eq!(
        request(fx.addr(), "GET", "/hello?before-exit").unwrap(),
        200
    );
    assert!(
        wait_until(WAIT, || tracer.out().contains("url.path=/hello")),
        "no span before the exit:\n{}",
        tracer.out()
    );
    kill(fx);
    let status = tracer.wait_exit(WAIT).unwrap_or_else(|| {
        panic!(
            "tracer still running after its target exited:\n{}",
            tracer.log()
        )
    });
    let log = tracer.log();
    assert!(status.success(), "exit {status}:\n{log}");
    let line = format!("pid {pid} exited; its probes are detached");
    assert_eq!(log.matches(&line).count(), 1, "{log}");
    assert_eq!(
        log.matches("exited; its probes are detached").count(),
        1,
        "{log}"
    );
    assert!(log.contains("every traced process has exited"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
}

#[test]
fn keep_running_outlives_the_target() {
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    let pid = fx.pid;
    let mut tracer = Tracer::start(&["--pid", &pid.to_string(), "--no-export", "--keep-running"]);
    tracer.wait_log(&format!("attached pid {pid} "));
    kill(fx);
    tracer.wait_log(&format!("pid {pid} exited; its probes are detached"));
    thread::sleep(Duration::from_millis(500));
    assert!(tracer.running(), "{}", tracer.log());
    assert!(tracer.stop().success());
}

#[test]
fn follow_name_attaches_processes_that_start_later_by_executable_name() {
    // Nothing named like this runs (or exists) when the tracer starts: the DaemonSet's case.
    let name = format!("kt-by-name-{}", std::process::id());
    let mut tracer = Tracer::start(&[
        "--follow-name",
        &name,
        "--follow-interval",
        "100ms",
        "--no-export",
        "--stdout",
        "--sample-ratio",
        "1",
    ]);
    tracer.wait_log(&format!(
        "following name {name}: 0 running process(es) attached"
    ));
    // A process of another name is not attached; one of this name is, wherever it lives.
    let other = Copy::of(&fixture("httpserver", false), &format!("{name}-other"));
    let o = Fixture::http(&other.path).unwrap();
    let exe = Copy::of(&fixture("httpserver", false), &name);
    let a = Fixture::http(&exe.path).unwrap();
    tracer.wait_log(&format!(
        "following name {name}: attached new pid {}",
        a.pid
    ));
    assert_eq!(request(a.addr(), "GET", "/hello?by=name").unwrap(), 200);
    assert_eq!(request(o.addr(), "GET", "/hello?by=other").unwrap(), 200);
    assert!(
        wait_until(WAIT, || tracer.out().contains(&format!("pid {})", a.pid))),
        "no span from the process found by name:\n{}\n{}",
        tracer.out(),
        tracer.log()
    );
    assert!(
        !tracer.log().contains(&format!("pid {}", o.pid)),
        "a process of another name was attached:\n{}",
        tracer.log()
    );
    let a_pid = a.pid;
    kill(a);
    kill(o);
    tracer.wait_log(&format!("pid {a_pid} exited; its probes are detached"));
    tracer.wait_log(&format!(
        "no traced process left; still following name {name}"
    ));
    assert!(tracer.stop().success(), "{}", tracer.log());
}

#[test]
fn follow_exe_reattaches_when_the_process_restarts() {
    let exe = Copy::of(&fixture("httpserver", false), "restarting-server");
    let a = Fixture::http(&exe.path).unwrap();
    let mut tracer = Tracer::start(&[
        "--follow-exe",
        exe.path_str(),
        "--follow-interval",
        "100ms",
        "--no-export",
        "--stdout",
        "--sample-ratio",
        "1",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let metrics = tracer.metrics_addr();
    tracer.wait_log(&format!("attached pid {} ", a.pid));
    tracer.wait_log(&format!(
        "following {}: 1 running process(es) attached",
        exe.path.display()
    ));
    assert_eq!(request(a.addr(), "GET", "/hello?from=a").unwrap(), 200);
    assert!(
        wait_until(WAIT, || tracer.out().contains(&format!("pid {})", a.pid))),
        "no span from A:\n{}",
        tracer.out()
    );

    // Kraken restarts: A exits, B starts from the same executable.
    let a_pid = a.pid;
    kill(a);
    tracer.wait_log(&format!("pid {a_pid} exited; its probes are detached"));
    tracer.wait_log("no traced process left; still following");
    assert!(tracer.running(), "the tracer stopped while following");
    assert!(wait_until(WAIT, || {
        metric(metrics, "kraken_tracer_processes_attached") == Some(0.0)
    }));
    let spans_before = metric(metrics, "kraken_tracer_spans_created_total").unwrap_or(0.0);

    let b = Fixture::http(&exe.path).unwrap();
    tracer.wait_log(&format!(
        "following {}: attached new pid {}",
        exe.path.display(),
        b.pid
    ));
    for i in 0..5 {
        assert_eq!(
            request(b.addr(), "GET", &format!("/status/{}", 201 + i)).unwrap(),
            201 + i
        );
    }
    assert!(
        wait_until(WAIT, || {
            tracer
                .out()
                .lines()
                .filter(|l| l.contains(&format!("pid {})", b.pid)))
                .count()
                >= 5
        }),
        "no spans from B:\n{}\n{}",
        tracer.out(),
        tracer.log()
    );
    assert!(
        tracer
            .out()
            .contains("url.path=/status/203 http.response.status_code=203"),
        "{}",
        tracer.out()
    );
    assert!(
        wait_until(WAIT, || {
            metric(metrics, "kraken_tracer_spans_created_total").unwrap_or(0.0)
                >= spans_before + 5.0
        }),
        "spans_created did not grow"
    );
    assert!(wait_until(WAIT, || {
        metric(metrics, "kraken_tracer_processes_attached") == Some(1.0)
    }));
    assert_eq!(
        metric(metrics, "kraken_tracer_processes_exited_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(metrics, "kraken_tracer_attach_failures_total"),
        Some(0.0)
    );
    let b_pid = b.pid;
    kill(b);
    tracer.wait_log(&format!("pid {b_pid} exited; its probes are detached"));
    let status = tracer.stop();
    let log = tracer.log();
    assert!(status.success(), "{log}");
    // Each exit detached once; each process attached once.
    for pid in [a_pid, b_pid] {
        assert_eq!(
            log.matches(&format!("pid {pid} exited; its probes are detached"))
                .count(),
            1,
            "{log}"
        );
        assert_eq!(
            log.matches(&format!("attached pid {pid} ")).count(),
            1,
            "{log}"
        );
    }
}

#[test]
fn follow_exe_follows_an_upgraded_file() {
    let exe = Copy::of(&fixture("httpserver", false), "upgraded-server");
    let old = Fixture::http(&exe.path).unwrap();
    let mut tracer = Tracer::start(&[
        "--follow-exe",
        exe.path_str(),
        "--follow-interval",
        "100ms",
        "--no-export",
        "--stdout",
        "--sample-ratio",
        "1",
    ]);
    tracer.wait_log(&format!("attached pid {} ", old.pid));
    // The upgrade: a new file renamed over the path (a new inode; the running process keeps the
    // old one, now "(deleted)"). A stripped build, so it really differs.
    let staged = exe.dir.join("upgraded-server.new");
    std::fs::copy(fixture("httpserver", true), &staged).unwrap();
    std::fs::rename(&staged, &exe.path).unwrap();
    tracer.wait_log("the file was replaced");
    let new = Fixture::http(&exe.path).unwrap();
    tracer.wait_log(&format!(
        "following {}: attached new pid {}",
        exe.path.display(),
        new.pid
    ));
    for fx in [&old, &new] {
        assert_eq!(request(fx.addr(), "GET", "/hello?upgrade").unwrap(), 200);
    }
    assert!(
        wait_until(WAIT, || {
            let out = tracer.out();
            out.contains(&format!("pid {})", old.pid)) && out.contains(&format!("pid {})", new.pid))
        }),
        "spans from both processes expected:\n{}",
        tracer.out()
    );
    assert!(tracer.stop().success());
}

/// A fixture started by `unshare --pid --fork --mount-proc` from a tmpfs mounted only in its
/// own mount namespace: its executable's path does not exist on the host.
struct Contained {
    /// unshare, whose death takes the namespace with it.
    child: Fixture,
    /// The fixture's PID in the host's PID namespace.
    pid: u32,
    addr: SocketAddr,
    /// The host directory the tmpfs was mounted over (empty here).
    dir: PathBuf,
    /// The executable's path inside the container.
    inner_path: PathBuf,
}

impl Contained {
    fn start(bin: &Path) -> Contained {
        let dir = std::env::temp_dir().join(format!("kraken-tracer-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let inner_path = dir.join("contained-server");
        let script = format!(
            "mount -t tmpfs kraken-tracer-test {dir} && cp {bin} {exe} && exec {exe}",
            dir = dir.display(),
            bin = bin.display(),
            exe = inner_path.display()
        );
        let fx = Fixture::http_command(
            Command::new("unshare")
                .args([
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "--kill-child",
                    "sh",
                    "-c",
                ])
                .arg(&script),
        )
        .expect("unshare (util-linux)");
        // The fixture is unshare's child (sh exec'd it).
        let pid = children(fx.pid)
            .into_iter()
            .next()
            .expect("the contained process");
        Contained {
            addr: fx.addr(),
            child: fx,
            pid,
            dir,
            inner_path,
        }
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        // --kill-child: the namespace's init, and with it everything in it, dies with unshare.
        let _ = self.child.child.kill();
        let _ = self.child.child.wait();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// PIDs whose parent is `ppid`.
fn children(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(ppid) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn process_in_its_own_pid_and_mount_namespace_is_traced_by_host_pid() {
    let fx = Contained::start(&fixture("httpserver", false));
    let pid = fx.pid;
    // Really contained: PID 1 of its own PID namespace, another mount namespace, and the path
    // its /proc/PID/exe shows does not exist on the host.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(
        nspid.split_whitespace().skip(1).collect::<Vec<_>>(),
        [pid.to_string().as_str(), "1"],
        "{nspid}"
    );
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_ne!(ns("self"), ns(&pid.to_string()));
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        fx.inner_path
    );
    assert!(!fx.inner_path.exists(), "the exe path exists on the host");

    // By PID, and by following the executable through /proc/PID/root.
    let by_pid =
        TracerProcess::start(&[pid], &["--no-export", "--stdout", "--sample-ratio", "1"]).unwrap();
    let through_root = format!("/proc/{pid}/root{}", fx.inner_path.display());
    let mut follower = Tracer::start(&[
        "--follow-exe",
        &through_root,
        "--no-export",
        "--stdout",
        "--sample-ratio",
        "1",
    ]);
    follower.wait_log(&format!("attached pid {pid} "));
    for i in 0..3 {
        assert_eq!(
            request(fx.addr, "GET", &format!("/status/{}", 404 + i)).unwrap(),
            404 + i
        );
    }
    let has_spans = |out: &str| {
        (0..3).all(|i| {
            out.contains(&format!(
                "url.path=/status/{0} http.response.status_code={0}",
                404 + i
            ))
        }) && out.contains(&format!("(contained-server pid {pid})"))
    };
    assert!(
        wait_until(WAIT, || has_spans(&by_pid.stdout_text())),
        "by pid:\n{}\n{}",
        by_pid.stdout_text(),
        by_pid.log_text()
    );
    assert!(
        wait_until(WAIT, || has_spans(&follower.out())),
        "following {through_root}:\n{}\n{}",
        follower.out(),
        follower.log()
    );
    let (status, log) = by_pid.stop().unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "attached pid {pid} as service \"contained-server\""
        )),
        "{log}"
    );
    assert!(follower.stop().success());
}

/// A cgo build (dynamically linked, C on the request path), with DWARF and stripped.
fn cgo_binary_is_traced_correctly(stripped: bool) {
    let bin = match gofixture::cgo_fixture("httpserver-cgo", stripped) {
        Ok(bin) => bin,
        Err(e) => panic!("{e:#}"),
    };
    let bytes = std::fs::read(&bin).unwrap();
    let elf = object::File::parse(&*bytes).unwrap();
    {
        use object::Object as _;
        assert!(
            elf.section_by_name(".interp").is_some(),
            "{} is not dynamically linked: not a cgo build",
            bin.display()
        );
    }
    let fx = Fixture::http(&bin).unwrap();
    let other = Fixture::http(&fixture("httpserver", false)).unwrap();
    let tracer = TracerProcess::start(
        &[fx.pid],
        &["--no-export", "--stdout", "--sample-ratio", "1"],
    )
    .unwrap();
    let expected = if stripped {
        "Table { covered: true }"
    } else {
        "Dwarf"
    };
    assert!(
        tracer
            .log_text()
            .contains(&format!("offsets from {expected}")),
        "{}",
        tracer.log_text()
    );
    assert_eq!(request(fx.addr(), "GET", "/hello").unwrap(), 200);
    assert_eq!(request(fx.addr(), "GET", "/status/404").unwrap(), 404);
    assert_eq!(request(fx.addr(), "POST", "/status/503").unwrap(), 503);
    let call = format!("/call?url=http://{}/hello", other.addr());
    assert_eq!(request(fx.addr(), "GET", &call).unwrap(), 200);
    let want = [
        "GET [SERVER]".to_owned(),
        "url.path=/hello http.response.status_code=200".to_owned(),
        "url.path=/status/404 http.response.status_code=404".to_owned(),
        "POST [SERVER]".to_owned(),
        "url.path=/status/503 http.response.status_code=503".to_owned(),
        format!(
            "url.full=http://{}/hello http.response.status_code=200",
            other.addr()
        ),
    ];
    assert!(
        wait_until(WAIT, || {
            let out = tracer.stdout_text();
            want.iter().all(|w| out.contains(w.as_str()))
        }),
        "missing spans:\n{}\n{}",
        tracer.stdout_text(),
        tracer.log_text()
    );
    // The client span is the /call server span's child.
    let out = tracer.stdout_text();
    let call_tree = out
        .split("trace ")
        .find(|t| t.contains("url.path=/call"))
        .unwrap_or_else(|| panic!("no /call trace:\n{out}"));
    assert!(call_tree.contains("└─ GET [CLIENT]"), "{call_tree}");
    let (status, log) = tracer.stop().unwrap();
    assert!(status.success(), "{log}");
    assert!(!log.contains("undecodable 1"), "{log}");
}

#[test]
fn cgo_binary_with_dwarf_is_traced_correctly() {
    cgo_binary_is_traced_correctly(false);
}

#[test]
fn cgo_binary_stripped_is_traced_correctly() {
    cgo_binary_is_traced_correctly(true);
}

/// A stripped fixture whose Go version (in its build info and runtime.buildVersion) is
/// rewritten to go1.99.P: a version newer than the offsets table. Its real layout is the
/// toolchain's, which the newest table row need not match.
fn future_go_fixture() -> (Copy, String) {
    let bin = fixture("httpserver", true);
    let binary = kraken_tracer::symbols::Binary::open(&bin).unwrap();
    let real = binary.go_version().unwrap().raw.clone();
    let patch = real.rsplit('.').next().unwrap();
    let fake = format!(
        "go1.{}.{patch}",
        "9".repeat(real.split('.').nth(1).unwrap().len())
    );
    assert_eq!(fake.len(), real.len());
    let bytes = std::fs::read(&bin).unwrap();
    let mut patched = bytes.clone();
    let mut n = 0;
    let mut i = 0;
    while let Some(at) = patched[i..]
        .windows(real.len())
        .position(|w| w == real.as_bytes())
    {
        patched[i + at..i + at + real.len()].copy_from_slice(fake.as_bytes());
        i += at + real.len();
        n += 1;
    }
    assert!(n >= 1, "{real} not found in {}", bin.display());
    let copy = Copy::of(&bin, "future-go-server");
    std::fs::write(&copy.path, patched).unwrap();
    let found = kraken_tracer::symbols::Binary::open(&copy.path).unwrap();
    assert_eq!(found.go_version().unwrap().raw, fake);
    (copy, fake)
}

#[test]
fn unverified_offsets_are_refused_unless_allowed() {
    let (exe, fake) = future_go_fixture();
    let fx = Fixture::http(&exe.path).unwrap();
    let pid = fx.pid.to_string();
    // By PID: a clear error, nothing attached.
    let out = Command::new(tracer_bin())
        .args(["attach", "--pid", &pid, "--no-export"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("kraken-tracer: error:"))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    for needle in [
        fake.as_str(),
        "outside the verified offsets table",
        "no usable DWARF",
        "not attached",
        "--allow-unverified-offsets",
    ] {
        assert!(error.contains(needle), "{needle:?} not in {error}");
    }
    assert!(!stderr.contains("attached pid"), "{stderr}");

    // Followed: logged and counted, the tracer keeps running.
    let mut follower = Tracer::start(&[
        "--follow-exe",
        exe.path_str(),
        "--no-export",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let metrics = follower.metrics_addr();
    follower.wait_log(&format!(
        "following {}: cannot attach pid {pid}",
        exe.path.display()
    ));
    assert!(wait_until(WAIT, || {
        metric(metrics, "kraken_tracer_attach_failures_total") == Some(1.0)
    }));
    assert_eq!(
        metric(metrics, "kraken_tracer_processes_attached"),
        Some(0.0)
    );
    assert!(follower.running(), "{}", follower.log());
    assert!(follower.stop().success());

    // Accepted by the user: attached, with a warning.
    let tracer =
        TracerProcess::start(&[fx.pid], &["--no-export", "--allow-unverified-offsets"]).unwrap();
    let log = tracer.log_text();
    assert!(
        log.contains("attaching anyway (--allow-unverified-offsets)"),
        "{log}"
    );
    assert!(
        log.contains("offsets from Table { covered: false }"),
        "{log}"
    );
    let (status, _) = tracer.stop().unwrap();
    assert!(status.success());
}
