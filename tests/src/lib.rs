//! Harness for the privileged integration tests: Go fixtures, an in-process tracer, a tiny
//! HTTP client, and waiting on conditions with deadlines (never fixed sleeps).

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use kraken_tracer::{events::Event, reader::EventReader, tracer::Tracer};

#[path = "../../xtask/src/cache.rs"]
mod cache;
pub mod gofixture;
pub mod http;
pub mod jaeger;
pub mod kraken;
pub mod netns;
pub mod oci;
pub mod procstat;
pub mod qemu;
pub mod waterfall;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Spawns `cmd`, trying again while exec fails with ETXTBSY: a test that has just copied an
/// executable can find it "busy" for a moment, when another test thread forked (a child holds a
/// copy of the copy's write descriptor until its own exec closes it).
pub fn spawn_retrying_busy(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match cmd.spawn() {
            Err(e)
                if e.raw_os_error() == Some(libc::ETXTBSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::yield_now();
            }
            other => return other,
        }
    }
}

/// Builds (once per test binary) and returns a Go fixture from tests/fixtures/<name>.
pub fn fixture(name: &str, stripped: bool) -> PathBuf {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    let _guard = LOCK.get_or_init(|| Mutex::new(())).lock();
    let out = workspace().join("target/fixtures").join(if stripped {
        format!("{name}-stripped")
    } else {
        name.to_owned()
    });
    if !out.exists() {
        let status = Command::new("go")
            .current_dir(workspace().join("tests/fixtures").join(name))
            .env("CGO_ENABLED", "0")
            .args(["build", "-trimpath", "-o"])
            .arg(&out)
            .arg(if stripped {
                "-ldflags=-s -w"
            } else {
                "-ldflags="
            })
            .arg(".")
            .status()
            .expect("go build");
        assert!(status.success(), "building fixture {name} failed");
    }
    out
}

/// A running fixture process; killed on drop.
pub struct Fixture {
    pub child: Child,
    pub pid: u32,
    pub addr: Option<SocketAddr>,
}

impl Fixture {
    /// Starts an HTTP fixture and waits for its "listening on ADDR" line.
    pub fn http(bin: &Path) -> Result<Fixture> {
        Self::http_command(&mut Command::new(bin))
    }

    /// Like [`http`](Self::http), for a fixture started through a wrapper (setpriv, unshare…)
    /// that passes its stdout on; `pid` is the wrapper's (the same when the wrapper execs it).
    pub fn http_command(cmd: &mut Command) -> Result<Fixture> {
        let mut child = spawn_retrying_busy(cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()))
            .with_context(|| format!("starting {cmd:?}"))?;
        let stdout = child.stdout.take().context("fixture stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected fixture output {line:?}"))?
            .parse()?;
        let pid = child.id();
        Ok(Fixture {
            child,
            pid,
            addr: Some(addr),
        })
    }

    /// Starts a fixture that prints one line when ready.
    pub fn plain(bin: &Path) -> Result<Fixture> {
        let mut child = Command::new(bin).stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().context("fixture stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let pid = child.id();
        Ok(Fixture {
            child,
            pid,
            addr: None,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("HTTP fixture")
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the status code.
pub fn request(addr: SocketAddr, method: &str, target: &str) -> Result<u16> {
    http::request(addr, method, target, &[], &[], Duration::from_secs(10)).map(|r| r.status)
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The tracer, loaded in-process, with its reader collecting every event into a Vec.
/// The tracer's ring-buffer reader (taken from `tracer`) on a thread of its own, handing every
/// event to `sink`, until dropped (or `finish`ed), which drains the ring one last time and
/// joins the thread.
pub struct ReaderThread {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ReaderThread {
    pub fn spawn(
        tracer: &mut Tracer,
        drain_interval: Duration,
        sink: impl FnMut(Event) + Send + 'static,
    ) -> Result<ReaderThread> {
        let ring = tracer.take_events()?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let reader = EventReader::new(ring, drain_interval).expect("reader");
                let _ = reader.run(sink, stop_rx).await;
            });
        });
        Ok(ReaderThread {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the reader after a last drain and waits for it.
    pub fn finish(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ReaderThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

pub struct Traced {
    pub tracer: Tracer,
    pub events: Arc<Mutex<Vec<Event>>>,
    _reader: ReaderThread,
}

impl Traced {
    pub fn start(pids: &[u32]) -> Result<Traced> {
        Self::start_with(pids, false)
    }

    /// Like `start`, with the kernel copying request queries too (`--capture-query`): for
    /// tests that tell requests apart by their query.
    pub fn start_capturing_query(pids: &[u32]) -> Result<Traced> {
        Self::start_with(pids, true)
    }

    fn start_with(pids: &[u32], capture_query: bool) -> Result<Traced> {
        let mut tracer = Tracer::load(&std::env::temp_dir())?;
        tracer.set_capture_query(capture_query);
        for &pid in pids {
            tracer.attach_pid(pid)?;
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let reader = ReaderThread::spawn(&mut tracer, Duration::from_millis(5), move |ev| {
            sink.lock().expect("events").push(ev)
        })?;
        Ok(Traced {
            tracer,
            events,
            _reader: reader,
        })
    }

    pub fn count(&self) -> usize {
        self.events.lock().map(|e| e.len()).unwrap_or(0)
    }

    /// Waits until `n` events arrived; fails with what arrived otherwise.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<Event>> {
        if !wait_until(timeout, || self.count() >= n) {
            bail!("waited {timeout:?} for {n} events, got {}", self.count());
        }
        Ok(self.events.lock().map(|e| e.clone()).unwrap_or_default())
    }
}

/// Path of the kraken-tracer binary (built by `cargo xtask test` before the tests run).
pub fn tracer_bin() -> PathBuf {
    std::env::var_os("KRAKEN_TRACER_BIN").map_or_else(
        || workspace().join("target/debug/kraken-tracer"),
        PathBuf::from,
    )
}

/// The real `kraken-tracer` binary, running `attach` in the background.
pub struct TracerProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    out: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(mut l) = into.lock() {
                l.push_str(&line);
                l.push('\n');
            }
        }
    })
}

impl TracerProcess {
    /// Starts `kraken-tracer attach <args>` and waits until it has attached to `pids`
    /// (its "attached pid N" log lines).
    pub fn start(pids: &[u32], extra: &[&str]) -> Result<TracerProcess> {
        let mut args: Vec<String> = Vec::new();
        for p in pids {
            args.extend(["--pid".to_owned(), p.to_string()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut tp = Self::spawn(&args)?;
        let attached = |log: &str| {
            pids.iter()
                .all(|p| log.contains(&format!("attached pid {p} ")))
        };
        if !wait_until(Duration::from_secs(30), || {
            attached(&tp.log_text()) || !tp.running()
        }) {
            bail!("tracer did not attach in time:\n{}", tp.log_text());
        }
        if !tp.running() {
            bail!("tracer exited:\n{}", tp.log_text());
        }
        Ok(tp)
    }

    /// Starts `kraken-tracer attach <args>` without waiting for anything.
    pub fn spawn(args: &[&str]) -> Result<TracerProcess> {
        let mut child = Command::new(tracer_bin())
            .arg("attach")
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("tracer stderr")?;
        let stdout = child.stdout.take().context("tracer stdout")?;
        let log = Arc::new(Mutex::new(String::new()));
        let out = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(stderr, Arc::clone(&log)),
            collect(stdout, Arc::clone(&out)),
        ];
        Ok(TracerProcess {
            child,
            log,
            out,
            readers,
        })
    }

    /// Waits until the log holds `needle`; fails with the log if `timeout` passes or the
    /// tracer exits without writing it (its whole output is read first).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let found = wait_until(timeout, || {
            self.log_text().contains(needle) || !self.running()
        });
        if found && !self.running() {
            self.join_readers();
        }
        if self.log_text().contains(needle) {
            return Ok(());
        }
        bail!(
            "no {needle:?} in the tracer's log (exited: {}):\n{}",
            !self.running(),
            self.log_text()
        )
    }

    /// Waits up to `timeout` for the tracer to exit by itself; its output is then complete.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_some() {
            self.join_readers();
        }
        status
    }

    /// SIGTERM (unless it already exited), then its exit status; its output is then complete.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        if let Ok(None) = self.child.try_wait() {
            let pid = i32::try_from(self.child.id())?;
            // SAFETY: kill(2) on our own, unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let status = self.child.wait()?;
        self.join_readers();
        Ok(status)
    }

    /// The tracer has exited: its pipes close, so the reader threads end.
    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits for the exit (the tracer flushes its export queue first).
    /// Returns the exit status and the whole log (stderr).
    pub fn stop(mut self) -> Result<(std::process::ExitStatus, String)> {
        let status = self.terminate()?;
        Ok((status, self.log_text()))
    }

    /// CPU time (user + system) the tracer process has used so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("bad /proc stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).context("utime")?.parse::<u64>()?
            + f.get(12).context("stime")?.parse::<u64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
        Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1)))
    }

    /// What the tracer printed on stdout so far.
    pub fn stdout_text(&self) -> String {
        self.out.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for TracerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
