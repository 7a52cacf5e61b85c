//! The capabilities `kraken-tracer attach` needs (docs/capabilities.md), proven on this kernel:
//! the tracer runs as an unprivileged user (nobody) with exactly the minimal set as ambient
//! capabilities, on a process of *another* user whose executable only that user can read;
//! it attaches and produces correct spans. Without any one capability of the set it fails with
//! an error that names the missing capability.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::{PermissionsExt as _, chown},
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use tracer_it::{Fixture, fixture, request, tracer_bin, wait_until};

/// The minimal set on a current kernel (uprobes need CAP_SYS_ADMIN since Linux 6.16 and its
/// stable backports; CAP_SYS_ADMIN also grants what CAP_BPF and CAP_PERFMON would).
const MINIMAL: [&str; 3] = ["sys_admin", "sys_ptrace", "dac_read_search"];
/// The user the tracer runs as.
const TRACER_UID: u32 = 65534;
/// The user the traced process runs as (any other unprivileged user).
const TARGET_UID: u32 = 64123;

/// A copy of the fixture readable and executable by `TARGET_UID` only, running as that user.
struct OtherUsersProcess {
    fx: Fixture,
    dir: PathBuf,
}

impl OtherUsersProcess {
    fn start() -> OtherUsersProcess {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kraken-tracer-caps-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("private-server");
        std::fs::copy(fixture("httpserver", false), &bin).unwrap();
        chown(&bin, Some(TARGET_UID), Some(TARGET_UID)).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700)).unwrap();
        // setpriv execs the fixture: same PID.
        let fx = Fixture::http_command(
            Command::new("setpriv")
                .args([
                    &format!("--reuid={TARGET_UID}"),
                    &format!("--regid={TARGET_UID}"),
                    "--clear-groups",
                    "--inh-caps=-all",
                    "--bounding-set=-all",
                ])
                .arg(&bin),
        )
        .expect("setpriv (util-linux)");
        OtherUsersProcess { fx, dir }
    }
}

impl Drop for OtherUsersProcess {
    fn drop(&mut self) {
        let _ = self.fx.child.kill();
        let _ = self.fx.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `kraken-tracer attach --pid PID ...` as `TRACER_UID` with exactly `caps` (effective,
/// permitted, inheritable, ambient and bounding sets).
fn tracer_with(caps: &[&str], pid: u32) -> Command {
    let set = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new("setpriv");
    cmd.args([
        format!("--reuid={TRACER_UID}"),
        format!("--regid={TRACER_UID}"),
        "--clear-groups".to_owned(),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
        format!("--bounding-set={set}"),
        "--".to_owned(),
    ])
    .arg(tracer_bin())
    .args(["attach", "--pid", &pid.to_string(), "--no-export"])
    .args(["--stdout", "--sample-ratio", "1"])
    .env("RUST_LOG", "info");
    cmd
}

/// Runs `cmd` expecting it to fail by itself; kills it if it is still running after 60 s.
fn run_expecting_exit(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiter = thread::spawn(move || child.wait_with_output().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !waiter.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if !waiter.is_finished() {
        // Still running: the capability was not needed after all. Stop it (our child, not
        // reaped while wait_with_output is pending).
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGTERM) };
    }
    waiter.join().unwrap()
}

fn error_line(out: &Output) -> Option<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find(|l| l.starts_with("kraken-tracer: error:"))
        .map(str::to_owned)
}

#[test]
fn the_minimal_set_attaches_and_traces() {
    let target = OtherUsersProcess::start();
    let pid = target.fx.pid;
    // The tracer, as nobody, could not even read this executable without DAC_READ_SEARCH.
    let mut cmd = tracer_with(&MINIMAL, pid);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    for (stream, into) in [
        (
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            log.clone(),
        ),
        (Box::new(child.stdout.take().unwrap()), out.clone()),
    ] {
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                into.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
    }
    let text = |s: &std::sync::Mutex<String>| s.lock().unwrap().clone();
    let attached = wait_until(Duration::from_secs(30), || {
        text(&log).contains(&format!("attached pid {pid} "))
            || matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(
        attached && text(&log).contains(&format!("attached pid {pid} ")),
        "not attached with {MINIMAL:?}:\n{}",
        text(&log)
    );
    let status_of = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    assert!(
        status_of
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&TRACER_UID.to_string())),
        "the tracer does not run as {TRACER_UID}:\n{status_of}"
    );
    assert_eq!(
        request(target.fx.addr(), "GET", "/status/404").unwrap(),
        404
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            text(&out).contains("url.path=/status/404 http.response.status_code=404")
        }),
        "no span:\n{}\n{}",
        text(&out),
        text(&log)
    );
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) on our own, unreaped child.
        unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}:\n{}", text(&log));
}

/// Without one capability of the minimal set: a failure whose error line names it.
fn without(cap: &str, needles: &[&str]) {
    let target = OtherUsersProcess::start();
    let caps: Vec<&str> = MINIMAL.iter().copied().filter(|c| *c != cap).collect();
    let out = run_expecting_exit(&mut tracer_with(&caps, target.fx.pid));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "attached without CAP_{}:\n{stderr}",
        cap.to_uppercase()
    );
    let line = error_line(&out).unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    for n in needles {
        assert!(line.contains(n), "{n:?} not in {line:?}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn without_cap_sys_admin_the_ebpf_programs_cannot_load() {
    without(
        "sys_admin",
        &[
            "permission denied creating BPF maps",
            "CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN",
        ],
    );
}

#[test]
fn without_cap_sys_ptrace_another_users_process_is_out_of_reach() {
    without(
        "sys_ptrace",
        &["permission denied reading /proc/", "CAP_SYS_PTRACE"],
    );
}

#[test]
fn without_cap_dac_read_search_an_unreadable_executable_is_out_of_reach() {
    without(
        "dac_read_search",
        &[
            "permission denied reading the executable",
            "CAP_DAC_READ_SEARCH",
        ],
    );
}

/// CAP_BPF + CAP_PERFMON instead of CAP_SYS_ADMIN: the programs load, but this kernel refuses
/// the uprobes (perf_event_open: EACCES). Kernels from before the 2025 change accept them.
/// CAP_NET_ADMIN too: without CAP_SYS_ADMIN, the propagation sockhash (a network map) needs it.
#[test]
fn bpf_and_perfmon_without_sys_admin_cannot_create_uprobes() {
    let target = OtherUsersProcess::start();
    let caps = [
        "bpf",
        "perfmon",
        "net_admin",
        "sys_ptrace",
        "dac_read_search",
    ];
    let out = run_expecting_exit(&mut tracer_with(&caps, target.fx.pid));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains(&format!("attached pid {} ", target.fx.pid)) {
        eprintln!(
            "this kernel still lets CAP_PERFMON create uprobes (it predates the revert): \
             CAP_BPF + CAP_PERFMON suffice here"
        );
        return;
    }
    assert!(!out.status.success(), "{stderr}");
    let line = error_line(&out).unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    for n in [
        "permission denied creating the uprobe",
        "perf_event_open",
        "uprobes need CAP_SYS_ADMIN",
    ] {
        assert!(line.contains(n), "{n:?} not in {line:?}");
    }
}
