//! One tracer scenario inside a qemu guest: the initramfs (busybox, `/init`, the tracer, its
//! shared libraries, a static Go fixture), the boot with a wall-clock limit, and the parse of
//! the guest's console. Shared by `cargo xtask qemu` and the integration tests
//! (`tests/src/qemu.rs` includes this file), so both run exactly the same guest.
//!
//! Needs std and anyhow only, plus `crate::cache` (present in both crates) for where
//! `cargo xtask setup` put the Debian kernels and busybox.

use std::{
    fmt::{self, Write as _},
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The ports of the two fixture processes inside the guest (it has its own loopback): the
/// frontend, which the requests go to, and the backend its `/call` calls.
pub const FRONTEND_PORT: u16 = 8080;
pub const BACKEND_PORT: u16 = 8081;

/// Requests `/init` makes to the frontend; each becomes one trace. `/call` makes the
/// frontend call the backend's `/hello`: its trace holds a CLIENT span with the backend's
/// SERVER span under it (two processes, one tracer).
pub const REQUESTS: &[&str] = &[
    "/hello",
    "/status/503",
    "/call?url=http://127.0.0.1:8081/hello",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// Debian's name for the architecture (packages, kernel flavour).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// What `uname -m` says in the guest.
    pub fn uname_m(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// Where the shared libraries of a binary for this architecture are found on the host
    /// (arm64: Debian's libc6-arm64-cross and libgcc-s1-arm64-cross).
    fn lib_dirs(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &[
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib64",
            ],
            Arch::Aarch64 => &["/usr/aarch64-linux-gnu/lib"],
        }
    }

    /// The default wall-clock limit for one guest run (software emulation for both here).
    pub fn default_timeout(self) -> Duration {
        match self {
            Arch::X86_64 => Duration::from_secs(300),
            Arch::Aarch64 => Duration::from_secs(600),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.uname_m())
    }
}

/// How qemu runs the guest: KVM (hardware virtualisation) or TCG (software emulation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// With the reason KVM was not used.
    Tcg(String),
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Accel::Kvm => f.write_str("KVM"),
            Accel::Tcg(why) => write!(f, "TCG ({why})"),
        }
    }
}

/// KVM when it can run a stock kernel of `arch`: the guest has the host's architecture and
/// the host's /dev/kvm is backed by hardware virtualisation (kvm_intel / kvm_amd). A /dev/kvm
/// from `kvm_pvm` (pagetable-based virtualisation, used by some cloud VMs without nested
/// hardware virtualisation) only boots PVM-enabled guest kernels: a Debian kernel hangs.
pub fn detect_accel(arch: Arch) -> Accel {
    if arch.uname_m() != std::env::consts::ARCH {
        return Accel::Tcg(format!(
            "{} guest on a {} host",
            arch,
            std::env::consts::ARCH
        ));
    }
    if !Path::new("/dev/kvm").exists() {
        return Accel::Tcg("no /dev/kvm".to_owned());
    }
    if ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| Path::new("/sys/module").join(m).exists())
    {
        return Accel::Kvm;
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Accel::Tcg(
            "/dev/kvm is kvm_pvm, which boots only PVM guest kernels, not Debian's".to_owned(),
        );
    }
    Accel::Tcg("/dev/kvm has no hardware virtualisation (no kvm_intel/kvm_amd)".to_owned())
}

/// Where `cargo xtask setup` keeps the Debian kernel and busybox of `arch`:
/// `<cache>/kraken-tracer/qemu/<debian arch>` (`KRAKEN_TRACER_QEMU_DIR` overrides `<…>/qemu`).
pub fn assets_dir(arch: Arch) -> PathBuf {
    crate::cache::tool_path("KRAKEN_TRACER_QEMU_DIR", "qemu").join(arch.debian())
}

/// The guest's kernel and busybox, as `cargo xtask setup` left them.
pub struct Assets {
    pub vmlinuz: PathBuf,
    pub busybox: PathBuf,
    /// The kernel release (`uname -r`), e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The Debian package it came from, `name=version`.
    pub package: String,
}

impl Assets {
    /// The cached assets of `arch`; fails naming `cargo xtask setup` if any is missing.
    pub fn cached(arch: Arch) -> Result<Assets> {
        let dir = assets_dir(arch);
        let read = |name: &str| {
            fs::read_to_string(dir.join(name))
                .map(|s| s.trim().to_owned())
                .with_context(|| {
                    format!(
                        "missing piece: {} (run `cargo xtask setup`)",
                        dir.join(name).display()
                    )
                })
        };
        let assets = Assets {
            vmlinuz: dir.join("vmlinuz"),
            busybox: dir.join("busybox"),
            release: read("release")?,
            package: read("package")?,
        };
        for p in [&assets.vmlinuz, &assets.busybox] {
            if !p.exists() {
                bail!("missing piece: {} (run `cargo xtask setup`)", p.display());
            }
        }
        Ok(assets)
    }
}

/// One guest run: what to put in it and how long it may take.
pub struct Scenario {
    pub arch: Arch,
    pub assets: Assets,
    /// The kraken-tracer binary for `arch` (dynamically linked against glibc).
    pub tracer: PathBuf,
    /// The static Go fixture for `arch` (tests/fixtures/httpserver).
    pub fixture: PathBuf,
    /// The initramfs and the console log go here.
    pub work_dir: PathBuf,
    pub accel: Accel,
    pub timeout: Duration,
}

/// What the guest reported (parsed from its console).
#[derive(Debug, Default)]
pub struct Report {
    /// The guest's whole console output.
    pub console_log: PathBuf,
    /// `uname -r` and `uname -m` in the guest.
    pub kernel_release: String,
    pub machine: String,
    /// `kraken-tracer features` (one `feature …` line each).
    pub features: Vec<String>,
    /// The tracer's log (stderr) and its `--stdout` trees.
    pub tracer_log: String,
    pub trees: String,
    /// The tracer's exit code after SIGINT (None: the guest did not say).
    pub tracer_exit: Option<i32>,
    /// Each request of [`REQUESTS`] as `(path, wget exit code)`.
    pub requests: Vec<(String, i32)>,
    /// Error lines `/init` printed (`QEMU-ERROR …`).
    pub errors: Vec<String>,
    /// From qemu's start to the guest powering off.
    pub elapsed: Duration,
    /// From qemu's start to `/init` starting (kernel boot, under emulation).
    pub boot: Option<Duration>,
}

impl Report {
    /// The tracer's socket-probe mode line, from `socket probes:` on (not the `feature
    /// socket probes:` line of the start-up report).
    pub fn socket_probes(&self) -> Option<&str> {
        self.tracer_log.lines().find_map(|l| {
            let at = l.find("socket probes: ")?;
            (!l[..at].ends_with("feature ")).then(|| &l[at..])
        })
    }

    /// One trace tree per `trace …` header line.
    pub fn trace_count(&self) -> usize {
        self.trees
            .lines()
            .filter(|l| l.starts_with("trace "))
            .count()
    }

    /// A short human-readable summary (the trees in full).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "guest kernel: {} ({})",
            self.kernel_release, self.machine
        );
        for f in &self.features {
            let _ = writeln!(s, "  {f}");
        }
        let _ = writeln!(
            s,
            "tracer: {}",
            self.socket_probes()
                .unwrap_or("no `socket probes:` line in the log")
        );
        for (path, code) in &self.requests {
            let _ = writeln!(s, "request {path}: wget exit {code}");
        }
        let _ = writeln!(s, "traces ({}):", self.trace_count());
        s.push_str(&self.trees);
        if !self.trees.ends_with('\n') {
            s.push('\n');
        }
        for e in &self.errors {
            let _ = writeln!(s, "guest error: {e}");
        }
        let _ = writeln!(
            s,
            "tracer exit: {}",
            self.tracer_exit
                .map_or_else(|| "unknown".to_owned(), |c| c.to_string())
        );
        let _ = writeln!(
            s,
            "time: {:.1} s in all, kernel boot {}",
            self.elapsed.as_secs_f64(),
            self.boot.map_or_else(
                || "unknown".to_owned(),
                |b| format!("{:.1} s", b.as_secs_f64())
            )
        );
        let _ = writeln!(s, "console: {}", self.console_log.display());
        s
    }
}

/// Builds the initramfs, boots the guest, waits (at most `timeout`) for it to power off, and
/// parses what it printed.
pub fn run(sc: &Scenario) -> Result<Report> {
    for (what, p) in [("tracer", &sc.tracer), ("fixture", &sc.fixture)] {
        if !p.exists() {
            bail!("missing piece: the {} {what} {}", sc.arch, p.display());
        }
    }
    fs::create_dir_all(&sc.work_dir)?;
    let initramfs = sc.work_dir.join("initramfs.cpio");
    write_initramfs(sc, &initramfs)?;
    let console_log = sc.work_dir.join("console.log");
    let mut cmd = qemu_command(sc, &initramfs);
    let (console, elapsed, boot) = boot(&mut cmd, &console_log, sc.timeout)?;
    let mut report = parse(&console);
    report.console_log = console_log;
    report.elapsed = elapsed;
    report.boot = boot;
    Ok(report)
}

fn qemu_command(sc: &Scenario, initramfs: &Path) -> Command {
    let mut cmd = Command::new(sc.arch.qemu());
    match sc.arch {
        Arch::X86_64 => {
            cmd.args(["-M", "pc"]);
        }
        Arch::Aarch64 => {
            // pauth-impdef: QEMU's own pointer-authentication hash, much cheaper to
            // emulate than the architected one.
            cmd.args(["-M", "virt", "-cpu", "max,pauth-impdef=on"]);
        }
    }
    match (&sc.accel, sc.arch) {
        (Accel::Kvm, _) => {
            // The host's IA32_ARCH_CAPABILITIES MSR cannot always be set in a nested guest.
            cmd.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]);
        }
        (Accel::Tcg(_), Arch::X86_64) => {
            cmd.args(["-accel", "tcg", "-cpu", "max"]);
        }
        (Accel::Tcg(_), Arch::Aarch64) => {
            cmd.args(["-accel", "tcg"]);
        }
    }
    let console = match sc.arch {
        Arch::X86_64 => "ttyS0",
        Arch::Aarch64 => "ttyAMA0",
    };
    cmd.args(["-smp", "2", "-m", "1024"])
        .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(&sc.assets.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "console={console} panic=-1 quiet loglevel=3 rdinit=/init"
        ));
    cmd
}

/// Runs qemu, copying its console to `log` as it comes; kills it after `timeout`.
/// Returns the console text, the elapsed time and when `/init` started.
fn boot(
    cmd: &mut Command,
    log: &Path,
    timeout: Duration,
) -> Result<(String, Duration, Option<Duration>)> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("missing piece: cannot start {cmd:?} (run `cargo xtask setup`)")
        })?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let mut file = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let text = Arc::new(Mutex::new(String::new()));
    let boot_at = Arc::new(Mutex::new(None));
    let reader = {
        let text = Arc::clone(&text);
        let boot_at = Arc::clone(&boot_at);
        thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches('\r');
                if line.starts_with("QEMU-INIT")
                    && let Ok(mut b) = boot_at.lock()
                {
                    *b = Some(start.elapsed());
                }
                let _ = writeln!(file, "{line}");
                if let Ok(mut t) = text.lock() {
                    t.push_str(line);
                    t.push('\n');
                }
            }
        })
    };
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let deadline = start + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    let _ = reader.join();
    let qemu_err = err_reader.join().unwrap_or_default();
    let console = text.lock().map(|t| t.clone()).unwrap_or_default();
    let boot_at = boot_at.lock().ok().and_then(|b| *b);
    let tail = || {
        let lines: Vec<&str> = console.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    match status {
        None => bail!(
            "the guest did not power off within {timeout:?}: qemu killed. Console ({}), last lines:\n{}",
            log.display(),
            tail()
        ),
        Some(s) if !s.success() => bail!(
            "qemu failed with {s}: {}\nConsole ({}), last lines:\n{}",
            qemu_err.trim(),
            log.display(),
            tail()
        ),
        Some(_) => {}
    }
    if !console.contains("QEMU-DONE") {
        bail!(
            "the guest powered off before /init finished. Console ({}), last lines:\n{}",
            log.display(),
            tail()
        );
    }
    Ok((console, elapsed, boot_at))
}

/// Reads the markers `/init` prints: `QEMU-BEGIN name` … `QEMU-END name` sections and
/// `QEMU-RESULT key=value` lines.
pub fn parse(console: &str) -> Report {
    let mut r = Report::default();
    let mut section: Option<(String, String)> = None;
    for line in console.lines() {
        if let Some((name, body)) = &mut section {
            if line.strip_prefix("QEMU-END ") == Some(name.as_str()) {
                match name.as_str() {
                    "features" => {
                        r.features = body
                            .lines()
                            .filter(|l| l.starts_with("feature "))
                            .map(str::to_owned)
                            .collect();
                    }
                    "tracer-log" => r.tracer_log = std::mem::take(body),
                    "tracer-stdout" => r.trees = std::mem::take(body),
                    _ => {}
                }
                section = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
            continue;
        }
        if let Some(name) = line.strip_prefix("QEMU-BEGIN ") {
            section = Some((name.trim().to_owned(), String::new()));
        } else if let Some(rest) = line.strip_prefix("QEMU-RESULT ") {
            let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
            match key {
                "uname-r" => r.kernel_release = value.trim().to_owned(),
                "uname-m" => r.machine = value.trim().to_owned(),
                "tracer-exit" => r.tracer_exit = value.trim().parse().ok(),
                "request" => {
                    if let Some((path, code)) = value.trim().rsplit_once(' ') {
                        r.requests
                            .push((path.to_owned(), code.parse().unwrap_or(-1)));
                    }
                }
                _ => {}
            }
        } else if let Some(e) = line.strip_prefix("QEMU-ERROR ") {
            r.errors.push(e.to_owned());
        }
    }
    r
}

/// The guest's `/init` (busybox sh). Every wait polls a condition against a deadline.
fn init_script() -> String {
    let requests = REQUESTS
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin LD_LIBRARY_PATH=/lib
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo QEMU-INIT
mount -t tracefs tracefs /sys/kernel/tracing || echo "QEMU-ERROR cannot mount tracefs"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
ip link set lo up
echo "QEMU-RESULT uname-r=$(uname -r)"
echo "QEMU-RESULT uname-m=$(uname -m)"

# alive PID: the process exists and is not a zombie (kill -0 succeeds on zombies).
alive() {{
    s=$(cat /proc/$1/stat 2>/dev/null) || return 1
    set -- $s
    [ "$3" != Z ]
}}
# wait_for FILE TEXT SECONDS [PID]: until FILE contains TEXT; fails at the deadline or
# when PID (if given) has exited.
wait_for() {{
    end=$(( $(date +%s) + $3 ))
    while ! grep -q -- "$2" "$1" 2>/dev/null; do
        if [ -n "$4" ] && ! alive "$4"; then return 1; fi
        if [ "$(date +%s)" -ge "$end" ]; then return 1; fi
        sleep 0.1
    done
}}
finish() {{
    echo QEMU-BEGIN fixture-log; cat /tmp/frontend.out /tmp/backend.out 2>/dev/null; echo QEMU-END fixture-log
    echo QEMU-BEGIN tracer-log; cat /tmp/tracer.log 2>/dev/null; echo QEMU-END tracer-log
    echo QEMU-BEGIN tracer-stdout; cat /tmp/tracer.out 2>/dev/null; echo QEMU-END tracer-stdout
    for f in /tmp/*.verifier.log; do
        [ -f "$f" ] || continue
        echo "QEMU-BEGIN verifier-log $f (last 80 lines)"; tail -n 80 "$f"; echo "QEMU-END verifier-log"
    done
    echo QEMU-DONE
    poweroff -f
}}

echo QEMU-BEGIN features
/bin/kraken-tracer features 2>&1
echo QEMU-END features

/bin/httpserver -addr 127.0.0.1:{FRONTEND_PORT} >/tmp/frontend.out 2>&1 &
FPID=$!
/bin/httpserver -addr 127.0.0.1:{BACKEND_PORT} >/tmp/backend.out 2>&1 &
BPID=$!
wait_for /tmp/frontend.out "listening on" 60 $FPID || {{ echo "QEMU-ERROR the frontend did not start"; finish; }}
wait_for /tmp/backend.out "listening on" 60 $BPID || {{ echo "QEMU-ERROR the backend did not start"; finish; }}

RUST_LOG=info /bin/kraken-tracer attach --pid $FPID --pid $BPID --stdout --no-export \
    --sample-ratio 1 --socket-probes auto >/tmp/tracer.out 2>/tmp/tracer.log &
TPID=$!
for pid in $FPID $BPID; do
    wait_for /tmp/tracer.log "attached pid $pid " 240 $TPID \
        || {{ echo "QEMU-ERROR the tracer did not attach to pid $pid"; finish; }}
done

n=0
for p in {requests}; do
    wget -q -O /dev/null "http://127.0.0.1:{FRONTEND_PORT}$p"
    echo "QEMU-RESULT request=$p $?"
    n=$((n + 1))
done
# One tree per request, printed once its root span ends.
end=$(( $(date +%s) + 60 ))
while alive $TPID && [ "$(grep -c '^trace ' /tmp/tracer.out)" -lt $n ] \
    && [ "$(date +%s)" -lt "$end" ]; do
    sleep 0.1
done

kill -INT $TPID
end=$(( $(date +%s) + 60 ))
while alive $TPID && [ "$(date +%s)" -lt "$end" ]; do
    sleep 0.1
done
if alive $TPID; then
    echo "QEMU-ERROR the tracer did not exit within 60 s of SIGINT"
    kill -KILL $TPID
fi
wait $TPID
echo "QEMU-RESULT tracer-exit=$?"
kill $FPID $BPID
finish
"#
    )
}

/// Writes the initramfs (newc cpio, uncompressed: nothing to inflate under emulation).
fn write_initramfs(sc: &Scenario, out: &Path) -> Result<()> {
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "lib", "proc", "sys", "tmp", "root"] {
        cpio.dir(dir)?;
    }
    // The console the kernel opens for /init's stdio before devtmpfs is mounted.
    cpio.char_dev("dev/console", 5, 1)?;
    cpio.file("init", 0o755, init_script().into_bytes())?;
    cpio.file("bin/busybox", 0o755, read(&sc.assets.busybox)?)?;
    cpio.file("bin/kraken-tracer", 0o755, read(&sc.tracer)?)?;
    cpio.file("bin/httpserver", 0o755, read(&sc.fixture)?)?;
    let (interp, libs) = shared_libraries(&sc.tracer, sc.arch.lib_dirs())?;
    if let Some((path, host)) = interp {
        let rel = path.trim_start_matches('/');
        let mut at = String::new();
        for part in Path::new(rel).parent().into_iter().flat_map(Path::iter) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(&part.to_string_lossy());
            cpio.dir(&at)?;
        }
        cpio.file(rel, 0o755, read(&host)?)?;
    }
    for (name, host) in libs {
        cpio.file(&format!("lib/{name}"), 0o755, read(&host)?)?;
    }
    fs::write(out, cpio.finish()?).with_context(|| format!("write {}", out.display()))
}

fn read(p: &Path) -> Result<Vec<u8>> {
    fs::read(p).with_context(|| format!("read {}", p.display()))
}

/// The program interpreter of `bin` (its path in the guest and the host file) and every
/// shared library it needs, transitively (name, host file), found in `dirs`.
type Libraries = (Option<(String, PathBuf)>, Vec<(String, PathBuf)>);

fn shared_libraries(bin: &Path, dirs: &[&str]) -> Result<Libraries> {
    let find = |name: &str| {
        dirs.iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "missing piece: {name} (needed by {}) in none of {dirs:?} (run `cargo xtask setup`)",
                    bin.display()
                )
            })
    };
    let headers = readelf(&["-l"], bin)?;
    let interp = match headers
        .lines()
        .find_map(|l| l.split_once("program interpreter: "))
        .map(|(_, p)| p.trim_end_matches(']').trim().to_owned())
    {
        Some(path) => {
            let name = Path::new(&path)
                .file_name()
                .context("interpreter name")?
                .to_string_lossy()
                .into_owned();
            Some((path, find(&name)?))
        }
        None => None,
    };
    let mut libs: Vec<(String, PathBuf)> = Vec::new();
    let mut todo = needed(bin)?;
    while let Some(name) = todo.pop() {
        if libs.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let host = find(&name)?;
        todo.extend(needed(&host)?);
        libs.push((name, host));
    }
    Ok((interp, libs))
}

/// The `DT_NEEDED` names of an ELF file.
fn needed(elf: &Path) -> Result<Vec<String>> {
    Ok(readelf(&["-d"], elf)?
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            let start = l.find('[')? + 1;
            let end = l.rfind(']')?;
            l.get(start..end).map(str::to_owned)
        })
        .collect())
}

fn readelf(args: &[&str], elf: &Path) -> Result<String> {
    let out = Command::new("readelf")
        .args(["-W"])
        .args(args)
        .arg(elf)
        .output()
        .context("missing piece: readelf (binutils)")?;
    if !out.status.success() {
        bail!(
            "readelf {args:?} {} failed: {}",
            elf.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A newc ("070701") cpio archive, as the kernel unpacks an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: Vec<String>,
}

impl Cpio {
    fn dir(&mut self, path: &str) -> Result<()> {
        if self.dirs.iter().any(|d| d == path) {
            return Ok(());
        }
        self.dirs.push(path.to_owned());
        self.entry(path, 0o040_755, 0, 0, &[])
    }

    fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) -> Result<()> {
        self.entry(path, 0o100_000 | perm, 0, 0, &data)
    }

    fn char_dev(&mut self, path: &str, major: u32, minor: u32) -> Result<()> {
        self.entry(path, 0o020_600, major, minor, &[])
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        rdev_major: u32,
        rdev_minor: u32,
        data: &[u8],
    ) -> Result<()> {
        self.ino += 1;
        let name_size = path.len() + 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            u32::try_from(data.len())
                .with_context(|| format!("{path}: too large for a newc cpio archive"))?,
            0, // dev major
            0, // dev minor
            rdev_major,
            rdev_minor,
            u32::try_from(name_size)?,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(path.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Result<Vec<u8>> {
        self.entry("TRAILER!!!", 0, 0, 0, &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("bin").unwrap();
        c.dir("bin").unwrap();
        c.file("init", 0o755, b"#!/bin/sh\n".to_vec()).unwrap();
        let out = c.finish().unwrap();
        assert!(out.len().is_multiple_of(4));
        assert!(out.starts_with(b"070701"));
        // "bin": header (110) + name (4) = 114, padded to 116.
        assert_eq!(&out[116..122], b"070701");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn console_markers_are_parsed() {
        let console = "noise\n\
            QEMU-RESULT uname-r=6.1.0-56-amd64\n\
            QEMU-BEGIN features\nfeature kprobes: available\nQEMU-END features\n\
            QEMU-RESULT request=/hello 0\n\
            QEMU-BEGIN tracer-log\n[x INFO] feature socket probes: kprobe (a)\n\
            [x INFO] socket probes: kprobe (tcp_sendmsg)\nQEMU-END tracer-log\n\
            QEMU-BEGIN tracer-stdout\ntrace ab (httpserver pid 9)\n└─ GET [SERVER]\nQEMU-END tracer-stdout\n\
            QEMU-RESULT tracer-exit=0\nQEMU-DONE\n";
        let r = parse(console);
        assert_eq!(r.kernel_release, "6.1.0-56-amd64");
        assert_eq!(r.features, ["feature kprobes: available"]);
        assert_eq!(
            r.socket_probes(),
            Some("socket probes: kprobe (tcp_sendmsg)")
        );
        assert_eq!(r.requests, [("/hello".to_owned(), 0)]);
        assert_eq!(r.trace_count(), 1);
        assert_eq!(r.tracer_exit, Some(0));
    }
}
