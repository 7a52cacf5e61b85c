//! For the reliability tests (outage, overflow, soak): what a running process reports about
//! itself (memory from `/proc/PID/status`, the tracer's own Prometheus `/metrics`), and a
//! bounded HTTP load on keep-alive connections ([`Load`]) to put on a traced fixture.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use tracer_it::{TracerProcess, procstat};
//! let mut tracer = TracerProcess::start(&[1234], &["--metrics-addr", "127.0.0.1:0"])?;
//! let metrics = procstat::metrics_addr(&mut tracer)?;
//! let m = procstat::scrape(metrics, std::time::Duration::from_secs(1))?;
//! println!("tracer RSS {} KiB, {} spans exported", tracer.rss()? / 1024,
//!     procstat::get(&m, "kraken_tracer_spans_exported_total"));
//! # Ok(()) }
//! ```

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{TracerProcess, wait_until};

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, …), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let prefix = format!("{field}:");
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .with_context(|| format!("no {field} in {path}"))?;
    let kib: u64 = value
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("bad {field} in {path}: {value:?}"))?;
    Ok(kib * 1024)
}

/// Resident set size of a process, in bytes (`VmRSS`).
pub fn rss(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmRSS")
}

/// Threads of a process (`Threads` in `/proc/PID/status`).
pub fn threads(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Threads in {path}"))
}

/// Sets the nice value of every thread of a process (nice is per thread on Linux; threads
/// created later inherit it from their creator).
pub fn renice(pid: u32, nice: i32) -> Result<()> {
    let dir = format!("/proc/{pid}/task");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let tid: libc::id_t = entry?
            .file_name()
            .to_string_lossy()
            .parse()
            .context("bad task id")?;
        // SAFETY: setpriority(2) takes plain integers.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0 {
            let e = std::io::Error::last_os_error();
            // A thread may exit meanwhile.
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e).with_context(|| format!("setpriority({tid}, {nice})"));
            }
        }
    }
    Ok(())
}

/// Restricts every thread of a process to one CPU (threads created later inherit it).
pub fn pin(pid: u32, cpu: usize) -> Result<()> {
    let dir = format!("/proc/{pid}/task");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let tid: libc::pid_t = entry?
            .file_name()
            .to_string_lossy()
            .parse()
            .context("bad task id")?;
        // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and sched_setaffinity(2) get a
        // valid pointer and its size.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &raw const set)
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e).with_context(|| format!("sched_setaffinity({tid}, cpu {cpu})"));
            }
        }
    }
    Ok(())
}

/// The first CPU this process may run on.
pub fn first_allowed_cpu() -> Result<usize> {
    // SAFETY: sched_getaffinity(2) fills the set it is given; CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
        }
        (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .context("no CPU allowed")
    }
}

/// Bytes as MiB, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl TracerProcess {
    /// The tracer's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The tracer's resident set size now, in bytes (`VmRSS`).
    pub fn rss(&self) -> Result<u64> {
        rss(self.pid())
    }

    /// The tracer's peak resident set size so far, in bytes (`VmHWM`).
    pub fn peak_rss(&self) -> Result<u64> {
        status_bytes(self.pid(), "VmHWM")
    }
}

/// The address the tracer serves its metrics on, read from its log line
/// `self-metrics at http://ADDR/metrics` (start it with `--metrics-addr 127.0.0.1:0`).
pub fn metrics_addr(tracer: &mut TracerProcess) -> Result<SocketAddr> {
    let mut addr = None;
    wait_until(Duration::from_secs(30), || {
        addr = tracer
            .log_text()
            .lines()
            .find_map(|l| l.split("self-metrics at http://").nth(1))
            .and_then(|r| r.split('/').next())
            .and_then(|a| a.parse().ok());
        addr.is_some() || !tracer.running()
    });
    match addr {
        Some(a) => Ok(a),
        None => bail!(
            "no metrics address in the tracer's log (exited: {}):\n{}",
            !tracer.running(),
            tracer.log_text()
        ),
    }
}

/// Every sample of one scrape of `http://ADDR/metrics`, keyed `name{labels}` as printed,
/// failing unless it answers 200 within `timeout`.
pub fn scrape(addr: SocketAddr, timeout: Duration) -> Result<BTreeMap<String, f64>> {
    let r = crate::http::request(addr, "GET", "/metrics", &[], &[], timeout)?;
    if r.status != 200 {
        bail!("GET http://{addr}/metrics: HTTP {}", r.status);
    }
    Ok(String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect())
}

/// One sample (`name` or `name{labels}` exactly as printed), 0 when absent.
pub fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// The sum of every sample of a family (`name` and all its `name{...}` label sets).
pub fn sum(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            k.strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
        })
        .map(|(_, v)| v)
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0
}

/// Samples of a family by one label's value (e.g. the `cpu` of
/// `kraken_tracer_ringbuf_reserve_failures_total{cpu="3"}`).
pub fn by_label(m: &BTreeMap<String, f64>, name: &str, label: &str) -> BTreeMap<String, f64> {
    let needle = format!("{label}=\"");
    m.iter()
        .filter_map(|(k, v)| {
            let labels = k.strip_prefix(name)?.strip_prefix('{')?;
            let value = labels.split(&needle).nth(1)?.split('"').next()?;
            Some((value.to_owned(), *v))
        })
        .collect()
}

/// One HTTP/1.1 client connection kept alive across requests (reconnecting after an error).
/// Responses must carry a `Content-Length` (the Go fixture's handlers do).
pub struct KeepAlive {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr, timeout: Duration) -> KeepAlive {
        KeepAlive {
            addr,
            timeout,
            conn: None,
        }
    }

    /// `GET target`; returns the status. On any error the connection is dropped (the next
    /// request reconnects).
    pub fn get(&mut self, target: &str) -> Result<u16> {
        let r = self.try_get(target);
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    /// `GET target`, timed: the latency in ns from writing the request to the body's last byte.
    pub fn timed_get(&mut self, target: &str) -> Result<u64> {
        let t = std::time::Instant::now();
        self.get(target)?;
        Ok(u64::try_from(t.elapsed().as_nanos())?)
    }

    fn try_get(&mut self, target: &str) -> Result<u16> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().context("no connection")?;
        write!(
            conn.get_mut(),
            "GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.addr
        )?;
        let mut line = String::new();
        conn.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let (mut len, mut close) = (None, false);
        loop {
            line.clear();
            if conn.read_line(&mut line)? == 0 {
                bail!("connection closed in the headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    len = v.parse::<u64>().ok();
                } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let len = len.context("response without Content-Length")?;
        std::io::copy(&mut conn.by_ref().take(len), &mut std::io::sink())?;
        if close {
            self.conn = None;
        }
        Ok(status)
    }
}

/// Counts of a [`Load`], updated as it runs.
#[derive(Debug, Default)]
pub struct LoadCounts {
    /// Requests answered with a status below 500.
    pub ok: AtomicU64,
    /// Requests that failed (connection errors, time-outs) or were answered with a 5xx.
    pub failed: AtomicU64,
}

/// Client threads sending GET requests to one server over keep-alive connections, each
/// cycling through its targets, until stopped (or dropped).
pub struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<LoadCounts>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    /// `threads` clients, client `i` starting at target `i` of `targets`. With `pace`, each
    /// client starts a request at most every `pace` (a bounded load); without, flat out.
    pub fn start(
        addr: SocketAddr,
        targets: &[String],
        threads: usize,
        pace: Option<Duration>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(LoadCounts::default());
        let threads = (0..threads)
            .map(|i| {
                let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
                let targets = targets.to_vec();
                thread::spawn(move || {
                    let mut client = KeepAlive::new(addr, Duration::from_secs(10));
                    let mut next = Instant::now();
                    let mut k = i;
                    while !stop.load(Relaxed) && !targets.is_empty() {
                        let target = &targets[k % targets.len()];
                        k += 1;
                        match client.get(target) {
                            Ok(s) if s < 500 => counts.ok.fetch_add(1, Relaxed),
                            _ => counts.failed.fetch_add(1, Relaxed),
                        };
                        if let Some(p) = pace {
                            next += p;
                            let now = Instant::now();
                            if next > now {
                                thread::sleep(next - now);
                            } else {
                                next = now;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            counts,
            threads,
        }
    }

    pub fn ok(&self) -> u64 {
        self.counts.ok.load(Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.counts.failed.load(Relaxed)
    }

    /// Stops the clients, waits for them, and returns (ok, failed).
    pub fn stop(mut self) -> (u64, u64) {
        self.halt();
        (self.ok(), self.failed())
    }

    fn halt(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}
