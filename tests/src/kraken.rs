//! A real local Kraken cluster for the integration tests: [`Cluster::start`] runs testfs,
//! tracker, origin, build-index, proxy and one agent, built by `cargo xtask setup`
//! (tests/kraken/README.md), on loopback with the devcluster's fixed ports, and stops all of
//! it (the Go processes and the nginx processes they exec) on drop.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use tracer_it::kraken::{Cluster, Component};
//! let cluster = Cluster::start()?;
//! let digest = cluster.upload_to_testfs(b"hello")?;
//! let blob = cluster.download_via_agent("testfs", &digest)?;
//! assert_eq!(blob, b"hello");
//! let origin_pid = cluster.pid(Component::Origin); // the Go process, not its nginx
//! # Ok(()) }
//! ```
//!
//! Ports are fixed (Kraken's configs name each other by port), so only one cluster runs at a
//! time on a machine: [`Cluster::start`] takes a process-wide lock and an flock on
//! [`LOCK_FILE`], and waits for both. A test process killed before its cluster was dropped
//! leaves Kraken running; the next [`Cluster::start`] finds its process groups in
//! [`STATE_FILE`] and kills them first.

use std::{
    collections::BTreeSet,
    env,
    fmt::Write as _,
    fs::{self, File, OpenOptions},
    io::Read as _,
    net::{SocketAddr, TcpListener},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Condvar, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::http::percent_encode;
pub use crate::http::{Response, request};

use crate::workspace;

/// The Kraken release built by `cargo xtask setup` (shared with xtask/src/kraken.rs).
const VERSION: &str = include_str!("../kraken/VERSION");

/// Serializes clusters across test processes (flock).
pub const LOCK_FILE: &str = "/tmp/kraken-tracer-cluster.lock";
/// Process groups, state dir and testfs dir of the running cluster (for cleaning up after a
/// test process that was killed).
pub const STATE_FILE: &str = "/tmp/kraken-tracer-cluster.state";

/// The devcluster's ports (examples/devcluster in Kraken's repository).
pub mod ports {
    pub const TESTFS: u16 = 14000;
    /// Docker registry v2 (nginx), push side.
    pub const PROXY: u16 = 15000;
    /// Origin's P2P (TCP, protobuf) port.
    pub const ORIGIN_PEER: u16 = 15001;
    /// Origin's blob server (nginx in front of /tmp/kraken-origin.sock).
    pub const ORIGIN: u16 = 15002;
    pub const TRACKER: u16 = 15003;
    pub const BUILD_INDEX: u16 = 15004;
    /// Docker registry v2 (nginx), pull side.
    pub const AGENT_REGISTRY: u16 = 16000;
    /// Agent's P2P port.
    pub const AGENT_PEER: u16 = 16001;
    /// Agent's own HTTP server (Go listens on TCP directly, no nginx).
    pub const AGENT_SERVER: u16 = 16002;
    /// A second origin ([`Cluster::start_with_replica`]): P2P and blob server ports.
    pub const ORIGIN2_PEER: u16 = 15011;
    pub const ORIGIN2: u16 = 15012;
    /// The remote cluster ([`Cluster::start_with_remote`]): its origin and build-index.
    pub const REMOTE_ORIGIN_PEER: u16 = 15021;
    pub const REMOTE_ORIGIN: u16 = 15022;
    pub const REMOTE_BUILD_INDEX: u16 = 15024;
    pub const ALL: [u16; 14] = [
        REMOTE_ORIGIN_PEER,
        REMOTE_ORIGIN,
        REMOTE_BUILD_INDEX,
        TESTFS,
        PROXY,
        ORIGIN_PEER,
        ORIGIN,
        ORIGIN2_PEER,
        ORIGIN2,
        TRACKER,
        BUILD_INDEX,
        AGENT_REGISTRY,
        AGENT_PEER,
        AGENT_SERVER,
    ];
}

/// How long start-up may take (the components come up in about a second).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for another cluster (another test, another test binary) to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(900);
/// How long one blob download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// The unix sockets of the base configs (a stale one makes the component fail to listen).
const SOCKETS: &[&str] = &[
    "/tmp/kraken-agent-registry.sock",
    "/tmp/kraken-origin.sock",
    "/tmp/kraken-origin2.sock",
    "/tmp/kraken-remote-origin.sock",
    "/tmp/kraken-remote-build-index.sock",
    "/tmp/kraken-tracker.sock",
    "/tmp/kraken-build-index.sock",
    "/tmp/kraken-proxy.sock",
    "/tmp/kraken-proxy-registry.sock",
    "/tmp/kraken-proxy-registry-override.sock",
];

pub fn version() -> &'static str {
    VERSION.trim()
}

/// Where `cargo xtask setup` installs Kraken (`KRAKEN_TRACER_KRAKEN_DIR` overrides), holding
/// `bin/` and `config/<component>/base.yaml`.
pub fn install_dir() -> PathBuf {
    crate::cache::kraken_dir(version())
}

/// A cluster component. [`Component::ALL`] is the start order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Testfs,
    Tracker,
    Origin,
    BuildIndex,
    Proxy,
    Agent,
    /// A second origin in the same hash ring (only with [`Cluster::start_with_replica`]; not in
    /// [`Component::ALL`]): the replica of every blob.
    Origin2,
    /// The remote cluster's origin and build-index (only with [`Cluster::start_with_remote`]):
    /// the local build-index replicates tags to it.
    RemoteOrigin,
    RemoteBuildIndex,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::Testfs,
        Component::Tracker,
        Component::Origin,
        Component::BuildIndex,
        Component::Proxy,
        Component::Agent,
    ];

    /// Kraken's name for it (binary name, config directory).
    pub fn name(self) -> &'static str {
        match self {
            Component::Testfs => "testfs",
            Component::Tracker => "tracker",
            Component::Origin => "origin",
            Component::BuildIndex => "build-index",
            Component::Proxy => "proxy",
            Component::Agent => "agent",
            Component::Origin2 => "origin2",
            Component::RemoteOrigin => "remote-origin",
            Component::RemoteBuildIndex => "remote-build-index",
        }
    }

    /// Its executable's name.
    pub fn exe(self) -> &'static str {
        match self {
            Component::Origin2 | Component::RemoteOrigin => "origin",
            Component::RemoteBuildIndex => "build-index",
            c => c.name(),
        }
    }

    /// Its main HTTP port: nginx's for tracker, origin, build-index and proxy; the Go server's
    /// own for testfs and the agent (the agent's nginx is on [`ports::AGENT_REGISTRY`]).
    pub fn port(self) -> u16 {
        match self {
            Component::Testfs => ports::TESTFS,
            Component::Tracker => ports::TRACKER,
            Component::Origin => ports::ORIGIN,
            Component::BuildIndex => ports::BUILD_INDEX,
            Component::Proxy => ports::PROXY,
            Component::Agent => ports::AGENT_SERVER,
            Component::Origin2 => ports::ORIGIN2,
            Component::RemoteOrigin => ports::REMOTE_ORIGIN,
            Component::RemoteBuildIndex => ports::REMOTE_BUILD_INDEX,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// Whether the Go process execs nginx (all but testfs).
    pub fn uses_nginx(self) -> bool {
        self != Component::Testfs
    }

    /// The installed (unstripped) binary.
    pub fn bin(self) -> PathBuf {
        install_dir().join("bin").join(self.exe())
    }

    /// A stripped (`-ldflags=-s -w`) copy of the binary, built for agent and origin only.
    pub fn stripped_bin(self) -> Option<PathBuf> {
        let p = install_dir()
            .join("bin")
            .join(format!("{}-stripped", self.exe()));
        p.is_file().then_some(p)
    }

    fn args(self, config: &Path) -> Vec<String> {
        let config = format!("--config={}", config.display());
        let v: Vec<String> = match self {
            Component::Testfs => vec![format!("--port={}", ports::TESTFS)],
            Component::Tracker => vec![config, format!("--port={}", ports::TRACKER)],
            Component::Origin => vec![
                config,
                "--blobserver-hostname=localhost".into(),
                format!("--blobserver-port={}", ports::ORIGIN),
                "--peer-ip=127.0.0.1".into(),
                format!("--peer-port={}", ports::ORIGIN_PEER),
                "--zone=local".into(),
            ],
            Component::Origin2 => vec![
                config,
                "--blobserver-hostname=localhost".into(),
                format!("--blobserver-port={}", ports::ORIGIN2),
                "--peer-ip=127.0.0.1".into(),
                format!("--peer-port={}", ports::ORIGIN2_PEER),
                "--zone=local".into(),
            ],
            Component::RemoteOrigin => vec![
                config,
                "--blobserver-hostname=localhost".into(),
                format!("--blobserver-port={}", ports::REMOTE_ORIGIN),
                "--peer-ip=127.0.0.1".into(),
                format!("--peer-port={}", ports::REMOTE_ORIGIN_PEER),
                "--zone=local".into(),
            ],
            Component::RemoteBuildIndex => {
                vec![config, format!("--port={}", ports::REMOTE_BUILD_INDEX)]
            }
            Component::BuildIndex => vec![config, format!("--port={}", ports::BUILD_INDEX)],
            Component::Proxy => vec![config, format!("--port={}", ports::PROXY)],
            Component::Agent => vec![
                config,
                "--peer-ip=127.0.0.1".into(),
                format!("--peer-port={}", ports::AGENT_PEER),
                format!("--agent-server-port={}", ports::AGENT_SERVER),
                format!("--agent-registry-port={}", ports::AGENT_REGISTRY),
                "--zone=local".into(),
            ],
        };
        let mut v = v;
        if self != Component::Testfs {
            v.push("--cluster=local".into());
        }
        v
    }

    /// The endpoints that must answer 200 before the component counts as up: /health on each
    /// of its HTTP ports, then /readiness where it has one (it checks the component's own
    /// dependencies: origin and build-index their backend, tracker its origins, the agent
    /// tracker and build-index).
    fn ready_checks(self) -> &'static [(u16, &'static str)] {
        match self {
            Component::Testfs => &[(ports::TESTFS, "/health")],
            Component::Tracker => &[(ports::TRACKER, "/health"), (ports::TRACKER, "/readiness")],
            Component::Origin => &[(ports::ORIGIN, "/health"), (ports::ORIGIN, "/readiness")],
            Component::Origin2 => &[(ports::ORIGIN2, "/health"), (ports::ORIGIN2, "/readiness")],
            Component::RemoteOrigin => &[
                (ports::REMOTE_ORIGIN, "/health"),
                (ports::REMOTE_ORIGIN, "/readiness"),
            ],
            Component::RemoteBuildIndex => &[
                (ports::REMOTE_BUILD_INDEX, "/health"),
                (ports::REMOTE_BUILD_INDEX, "/readiness"),
            ],
            Component::BuildIndex => &[
                (ports::BUILD_INDEX, "/health"),
                (ports::BUILD_INDEX, "/readiness"),
            ],
            Component::Proxy => &[(ports::PROXY, "/health")],
            Component::Agent => &[
                (ports::AGENT_SERVER, "/health"),
                (ports::AGENT_REGISTRY, "/health"),
                (ports::AGENT_SERVER, "/readiness"),
            ],
        }
    }
}

struct Proc {
    component: Component,
    child: Child,
    log: PathBuf,
    config: Option<PathBuf>,
    ready_after: Duration,
}

/// A running local Kraken cluster; everything is stopped on drop. Its state directory (configs,
/// logs, caches, databases) is removed then, unless the dropping thread panics or
/// `KRAKEN_TRACER_KEEP_CLUSTER=1`, in which case its path is printed.
pub struct Cluster {
    dir: PathBuf,
    procs: Vec<Proc>,
    testfs_dir: Option<PathBuf>,
    started_in: Duration,
    /// With [`Cluster::start_on_nodes`]: the simulated nodes (dropped after the processes).
    net: Option<crate::netns::Net>,
    _lock: ClusterLock,
    /// Started with [`Component::Origin2`].
    replica: bool,
    /// Started with the remote cluster.
    remote: bool,
}

impl Cluster {
    /// Starts the whole cluster and waits until every component answers its health and
    /// readiness checks. Fails with the tails of the component logs otherwise.
    pub fn start() -> Result<Cluster> {
        Cluster::start_with(false, false, false)
    }

    /// Like [`start`](Self::start), with the components on three simulated nodes (network
    /// namespaces, `crate::netns`): `agent` (the agent), `tracker` (the tracker) and `origin`
    /// (origin, testfs, build-index, proxy), each on its own address; the configs name the
    /// other nodes by address. Each node's processes can then be traced by its own tracer.
    pub fn start_on_nodes() -> Result<Cluster> {
        Cluster::start_with(true, false, false)
    }

    /// The simulated node a component runs on (`start_on_nodes`).
    pub fn node_of(c: Component) -> &'static str {
        match c {
            Component::Agent => "agent",
            Component::Tracker => "tracker",
            _ => "origin",
        }
    }

    /// The cluster plus a small remote cluster (an origin on 15022 and a build-index on 15024,
    /// backed by the same testfs under other roots) configured as the remote of the local
    /// build-index for every tag: a tag put with `?replicate=true` is replicated to it.
    pub fn start_with_remote() -> Result<Cluster> {
        Cluster::start_with(false, false, true)
    }

    /// The cluster with a second origin ([`Component::Origin2`], ports 15011/15012) in both
    /// origins' hash ring: every committed upload is duplicated to the other origin.
    pub fn start_with_replica() -> Result<Cluster> {
        Cluster::start_with(false, true, false)
    }

    fn start_with(on_nodes: bool, replica: bool, remote: bool) -> Result<Cluster> {
        let install = install_dir();
        for c in Component::ALL {
            if !c.bin().is_file() {
                bail!(
                    "no Kraken binary at {} (run `cargo xtask setup`, or set KRAKEN_TRACER_KRAKEN_DIR)",
                    c.bin().display()
                );
            }
        }
        if !Path::new("/usr/sbin/nginx").exists() {
            bail!("Kraken needs nginx at /usr/sbin/nginx (run `cargo xtask setup`)");
        }
        let lock = ClusterLock::acquire(LOCK_TIMEOUT)?;
        let started = Instant::now();
        kill_leftovers();
        for s in SOCKETS {
            let _ = fs::remove_file(s);
        }
        if !on_nodes {
            check_ports_free()?;
        }
        let net = if on_nodes {
            Some(crate::netns::Net::new(&["agent", "tracker", "origin"])?)
        } else {
            None
        };

        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = env::temp_dir().join(format!(
            "kraken-tracer-cluster-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cluster = Cluster {
            dir,
            procs: Vec::new(),
            testfs_dir: None,
            started_in: Duration::ZERO,
            net,
            _lock: lock,
            replica,
            remote,
        };
        cluster.write_state()?;
        let testfs_before = testfs_dirs();
        let hostname = hostname()?;
        for c in Component::ALL {
            cluster.spawn(c, &install, &hostname)?;
        }
        cluster.wait_ready(started)?;
        if replica {
            // After the first origin is up: both write their nginx config to the same path
            // (/tmp/nginx/kraken-origin), read by each nginx as it starts.
            cluster.spawn(Component::Origin2, &install, &hostname)?;
            cluster.wait_ready(started)?;
        }
        if remote {
            for c in [Component::RemoteOrigin, Component::RemoteBuildIndex] {
                cluster.spawn(c, &install, &hostname)?;
                cluster.wait_ready(started)?;
            }
        }
        cluster.testfs_dir = testfs_dirs().difference(&testfs_before).next().cloned();
        cluster.write_state()?;
        cluster.started_in = started.elapsed();
        Ok(cluster)
    }

    fn spawn(&mut self, c: Component, install: &Path, hostname: &str) -> Result<()> {
        let cdir = self.dir.join(c.name());
        fs::create_dir_all(&cdir)?;
        let config = if c == Component::Testfs {
            None
        } else {
            // The base configs log to /var/log/kraken/kraken-<c>; ours override that, but
            // keep the directories so the base configs work as they are.
            let _ = fs::create_dir_all(format!("/var/log/kraken/kraken-{}", c.name()));
            let template = workspace()
                .join("tests/kraken/config")
                .join(format!("{}.yaml", c.name()));
            let text = fs::read_to_string(&template)
                .with_context(|| format!("reading {}", template.display()))?
                .replace("@BASE@", &install.join("config").to_string_lossy())
                .replace("@STATE@", &self.dir.to_string_lossy())
                .replace("@HOSTNAME@", hostname)
                .replace(
                    "@REMOTES@",
                    if self.remote {
                        r#"{"localhost:15024": [".*"]}"#
                    } else {
                        "{}"
                    },
                )
                .replace(
                    "@ORIGINS@",
                    if self.replica {
                        "[localhost:15002, localhost:15012]"
                    } else {
                        "[localhost:15002]"
                    },
                );
            // On nodes: every "localhost:<port>" names the node that serves that port.
            let text = match &self.net {
                Some(_) => ports::ALL.iter().fold(text, |t, p| {
                    t.replace(
                        &format!("localhost:{p}"),
                        &format!("{}:{p}", self.host(component_of_port(*p))),
                    )
                }),
                None => text,
            };
            let path = self.dir.join(format!("{}.yaml", c.name()));
            fs::write(&path, text)?;
            Some(path)
        };
        let log = self.dir.join(format!("{}.log", c.name()));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut args = c.args(config.as_deref().unwrap_or(Path::new("")));
        let mut cmd = match &self.net {
            Some(net) => {
                let host = self.host(c).to_string();
                for a in &mut args {
                    *a = a
                        .replace("=localhost", &format!("={host}"))
                        .replace("=127.0.0.1", &format!("={host}"));
                }
                net.command(Self::node_of(c), &c.bin())
            }
            None => Command::new(c.bin()),
        };
        let child = cmd
            .args(args)
            .current_dir(&cdir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: nginx (and its workers) inherit it, so the whole
            // component is stopped with one kill(-pgid).
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", c.bin().display()))?;
        self.procs.push(Proc {
            component: c,
            child,
            log,
            config,
            ready_after: Duration::ZERO,
        });
        self.write_state()
    }

    fn wait_ready(&mut self, started: Instant) -> Result<()> {
        let deadline = started + START_TIMEOUT;
        let mut pending: Vec<(Component, usize)> =
            self.procs.iter().map(|p| (p.component, 0)).collect();
        while !pending.is_empty() {
            for (c, step) in &mut pending {
                if !self.alive(*c) {
                    bail!(
                        "Kraken {} exited during start-up\n{}",
                        c.name(),
                        self.logs_report()
                    );
                }
                let checks = c.ready_checks();
                while *step < checks.len() {
                    let (port, path) = checks[*step];
                    // The agent's registry nginx only serves its own host (docker pull from
                    // localhost): from another node it answers 403 by design.
                    if self.net.is_some() && port == ports::AGENT_REGISTRY {
                        *step += 1;
                        continue;
                    }
                    let addr = SocketAddr::from((self.host(*c), port));
                    match request(addr, "GET", path, &[], &[], Duration::from_secs(5)) {
                        Ok(r) if r.status == 200 => *step += 1,
                        _ => break,
                    }
                }
                if *step == checks.len() {
                    let elapsed = started.elapsed();
                    if let Some(p) = self.procs.iter_mut().find(|p| p.component == *c) {
                        p.ready_after = elapsed;
                    }
                }
            }
            pending.retain(|(c, step)| *step < c.ready_checks().len());
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = pending
                    .iter()
                    .map(|(c, step)| {
                        let (port, path) = c.ready_checks()[*step];
                        format!("{} (GET :{port}{path})", c.name())
                    })
                    .collect();
                bail!(
                    "Kraken did not become ready within {START_TIMEOUT:?}: {}\n{}",
                    names.join(", "),
                    self.logs_report()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn proc(&self, c: Component) -> &Proc {
        self.procs
            .iter()
            .find(|p| p.component == c)
            .expect("every component is started")
    }

    /// The Go process of a component (not its nginx).
    /// Starts the real kraken-tracer on these components (service names `kraken-<component>`,
    /// 100 % sampling except health checks, which are dropped in the kernel), with `extra`
    /// arguments (e.g. the OTLP endpoint), and waits until it has attached.
    pub fn trace(&self, components: &[Component], extra: &[&str]) -> Result<crate::TracerProcess> {
        let mut args: Vec<String> = [
            "--sample-ratio",
            "1",
            "--no-default-rules",
            "--sample",
            "/health=0",
            "--sample",
            "/readiness=0",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        for c in components {
            args.push("--service-name-for".into());
            args.push(format!("{}=kraken-{}", self.pid(*c), c.name()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pids: Vec<u32> = components.iter().map(|c| self.pid(*c)).collect();
        crate::TracerProcess::start(&pids, &args)
    }

    pub fn pid(&self, c: Component) -> u32 {
        self.proc(c).child.id()
    }

    /// The nginx processes (master and workers) a component runs; empty for testfs.
    pub fn nginx_pids(&self, c: Component) -> Vec<u32> {
        let pgid = self.pid(c);
        proc_entries()
            .into_iter()
            .filter(|p| p.pgid == pgid && p.comm == "nginx" && p.state != 'Z')
            .map(|p| p.pid)
            .collect()
    }

    /// Whether the component's Go process runs (and, for those with nginx, its nginx master).
    pub fn alive(&self, c: Component) -> bool {
        let pid = self.pid(c);
        let go_alive = proc_stat(pid).is_some_and(|p| p.state != 'Z');
        // The Go process dies when nginx exits, but only after it noticed.
        go_alive
            && (!c.uses_nginx()
                || self.proc(c).ready_after.is_zero()
                || proc_entries()
                    .iter()
                    .any(|p| p.ppid == pid && p.comm == "nginx" && p.state != 'Z'))
    }

    /// Fails, with the logs, unless every component is alive.
    pub fn check_alive(&self) -> Result<()> {
        let dead: Vec<&str> = self
            .procs
            .iter()
            .map(|p| p.component)
            .filter(|c| !self.alive(*c))
            .map(|c| c.name())
            .collect();
        if !dead.is_empty() {
            bail!("Kraken components died: {dead:?}\n{}", self.logs_report());
        }
        Ok(())
    }

    /// `127.0.0.1:<port>` of the component's main HTTP port ([`Component::port`]), or its
    /// node's address with [`Cluster::start_on_nodes`].
    pub fn addr(&self, c: Component) -> SocketAddr {
        SocketAddr::from((self.host(c), c.port()))
    }

    /// The address the component is reached at: its node's, or 127.0.0.1.
    pub fn host(&self, c: Component) -> std::net::Ipv4Addr {
        match &self.net {
            Some(net) => net.node(Self::node_of(c)).addr,
            None => std::net::Ipv4Addr::LOCALHOST,
        }
    }

    /// The component's stdout and stderr (Kraken logs to stdout).
    pub fn log_path(&self, c: Component) -> &Path {
        &self.proc(c).log
    }

    /// The component's own directory: nginx-access.log, nginx-error.log, nginx-stdout.log,
    /// caches and databases.
    pub fn component_dir(&self, c: Component) -> PathBuf {
        self.dir.join(c.name())
    }

    /// The generated config (extends Kraken's base.yaml); None for testfs.
    pub fn config_path(&self, c: Component) -> Option<&Path> {
        self.proc(c).config.as_deref()
    }

    /// The cluster's state directory (configs, logs, caches).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// testfs's storage directory (it picks /tmp/kraken-testfs<random> itself).
    pub fn testfs_dir(&self) -> Option<&Path> {
        self.testfs_dir.as_deref()
    }

    /// How long [`Cluster::start`] took (lock wait excluded).
    pub fn start_duration(&self) -> Duration {
        self.started_in
    }

    /// When, counted from the start, the component passed its readiness checks.
    pub fn ready_after(&self, c: Component) -> Duration {
        self.proc(c).ready_after
    }

    /// The last `n` lines of a component's log.
    pub fn log_tail(&self, c: Component, n: usize) -> String {
        tail(&self.proc(c).log, n)
    }

    /// The tails of every component's log (and nginx's error log), for error messages.
    pub fn logs_report(&self) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let _ = writeln!(
                out,
                "---- {} (pid {}) {} ----\n{}",
                p.component.name(),
                p.child.id(),
                p.log.display(),
                tail(&p.log, 15)
            );
            let nginx_err = self.component_dir(p.component).join("nginx-error.log");
            let nginx_tail = tail(&nginx_err, 5);
            if !nginx_tail.is_empty() {
                let _ = writeln!(
                    out,
                    "---- {} nginx-error.log ----\n{nginx_tail}",
                    p.component.name()
                );
            }
        }
        out
    }

    /// Stores `blob` in testfs (`POST /files/blobs/<sha256 hex>`), the origin's backend for
    /// every namespace; returns the hex digest.
    pub fn upload_to_testfs(&self, blob: &[u8]) -> Result<String> {
        let hex = sha256_hex(blob);
        let target = format!("/files/blobs/{hex}");
        let r = request(
            self.addr(Component::Testfs),
            "POST",
            &target,
            &[("Content-Type", "application/octet-stream")],
            blob,
            Duration::from_secs(30),
        )?;
        r.expect(200, "POST", Component::Testfs, &target)?;
        Ok(hex)
    }

    /// Downloads a blob through the agent's own server
    /// (`GET :16002/namespace/<ns>/blobs/sha256:<hex>`). The agent answers when the P2P
    /// download is complete (tracker metainfo → origin fetches from testfs → P2P from the
    /// origin); a cached blob is served from disk.
    pub fn download_via_agent(&self, namespace: &str, hex: &str) -> Result<Vec<u8>> {
        let target = format!(
            "/namespace/{}/blobs/sha256:{hex}",
            percent_encode(namespace)
        );
        self.get_polling(Component::Agent, &target)
    }

    /// Downloads a blob straight from the origin (`GET :15002/namespace/<ns>/blobs/sha256:<hex>`),
    /// polling while it answers 202 (fetching from the backend).
    pub fn download_from_origin(&self, namespace: &str, hex: &str) -> Result<Vec<u8>> {
        let target = format!(
            "/namespace/{}/blobs/sha256:{hex}",
            percent_encode(namespace)
        );
        self.get_polling(Component::Origin, &target)
    }

    fn get_polling(&self, c: Component, target: &str) -> Result<Vec<u8>> {
        let deadline = Instant::now() + DOWNLOAD_TIMEOUT;
        loop {
            let r = request(self.addr(c), "GET", target, &[], &[], DOWNLOAD_TIMEOUT)?;
            match r.status {
                200 => return Ok(r.body),
                202 if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => {
                    return r
                        .expect(200, "GET", c, target)
                        .map(|r| r.body)
                        .with_context(|| self.logs_report());
                }
            }
        }
    }

    /// Uploads a blob to the origin in chunks of `chunk` bytes, as Kraken's own clients do:
    /// `POST /namespace/<ns>/blobs/sha256:<hex>/uploads?size=N` (upload id in `Location`),
    /// `PATCH …/uploads/<uid>` with `Content-Range: start-end` (end exclusive) per chunk, then
    /// `PUT …/uploads/<uid>` to commit (the origin writes it back to testfs asynchronously).
    /// Returns the hex digest. A blob the origin already has (409) counts as uploaded.
    pub fn upload_to_origin(&self, namespace: &str, blob: &[u8], chunk: usize) -> Result<String> {
        let hex = sha256_hex(blob);
        let base = format!(
            "/namespace/{}/blobs/sha256:{hex}/uploads",
            percent_encode(namespace)
        );
        let addr = self.addr(Component::Origin);
        let timeout = Duration::from_secs(60);
        let start = format!("{base}?size={}", blob.len());
        let r = request(addr, "POST", &start, &[], &[], timeout)?;
        if r.status == 409 {
            return Ok(hex);
        }
        let r = r.expect(200, "POST", Component::Origin, &start)?;
        let uid = r
            .header("location")
            .context("origin upload start: no Location header")?
            .to_owned();
        let target = format!("{base}/{uid}");
        let mut pos = 0;
        for part in blob.chunks(chunk.max(1)) {
            let range = format!("{pos}-{}", pos + part.len());
            request(
                addr,
                "PATCH",
                &target,
                &[
                    ("Content-Range", &range),
                    ("Content-Type", "application/octet-stream"),
                ],
                part,
                timeout,
            )?
            .expect(200, "PATCH", Component::Origin, &target)?;
            pos += part.len();
        }
        let r = request(addr, "PUT", &target, &[], &[], timeout)?;
        if r.status != 409 {
            r.expect(200, "PUT", Component::Origin, &target)?;
        }
        Ok(hex)
    }

    /// Records what a later start needs to clean up if this process dies without dropping.
    fn write_state(&self) -> Result<()> {
        let mut s = format!("dir {}\n", self.dir.display());
        for p in &self.procs {
            let _ = writeln!(s, "pgid {}", p.child.id());
        }
        if let Some(t) = &self.testfs_dir {
            let _ = writeln!(s, "testfs {}", t.display());
        }
        fs::write(STATE_FILE, s).with_context(|| format!("writing {STATE_FILE}"))
    }

    fn stop(&mut self) {
        let pgids: Vec<u32> = self.procs.iter().map(|p| p.child.id()).collect();
        for &g in pgids.iter().rev() {
            signal_group(g, libc::SIGTERM);
        }
        let mut gone = self.wait_gone(&pgids, Duration::from_secs(5));
        if !gone {
            for &g in &pgids {
                signal_group(g, libc::SIGKILL);
            }
            gone = self.wait_gone(&pgids, Duration::from_secs(5));
        }
        if !gone {
            eprintln!("kraken harness: some Kraken processes survived SIGKILL: {pgids:?}");
        }
        for s in SOCKETS {
            let _ = fs::remove_file(s);
        }
        if let Some(t) = &self.testfs_dir {
            let _ = fs::remove_dir_all(t);
        }
        let _ = fs::remove_file(STATE_FILE);
    }

    /// Reaps the Go processes, then waits until no live process is left in their groups
    /// (nginx is reparented when its Go parent dies; zombies don't count).
    fn wait_gone(&mut self, pgids: &[u32], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let reaped = self
                .procs
                .iter_mut()
                .all(|p| matches!(p.child.try_wait(), Ok(Some(_)) | Err(_)));
            let left = proc_entries()
                .iter()
                .any(|p| pgids.contains(&p.pgid) && p.state != 'Z');
            if reaped && !left {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let keep =
            thread::panicking() || env::var("KRAKEN_TRACER_KEEP_CLUSTER").is_ok_and(|v| v == "1");
        if keep {
            eprintln!(
                "kraken harness: cluster state and logs kept in {}",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The process-wide half of the cluster lock (the flock is per open file description, so it
/// would serialize threads too; this keeps waiting threads off the file).
static IN_USE: Mutex<bool> = Mutex::new(false);
static RELEASED: Condvar = Condvar::new();

struct ClusterLock {
    _file: File,
}

impl ClusterLock {
    fn acquire(timeout: Duration) -> Result<ClusterLock> {
        let deadline = Instant::now() + timeout;
        {
            let mut in_use = IN_USE.lock().unwrap_or_else(|e| e.into_inner());
            while *in_use {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    bail!("another Kraken cluster in this process did not stop within {timeout:?}");
                }
                in_use = RELEASED
                    .wait_timeout(in_use, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            *in_use = true;
        }
        let release = || {
            *IN_USE.lock().unwrap_or_else(|e| e.into_inner()) = false;
            RELEASED.notify_one();
        };
        let file = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
        {
            Ok(f) => f,
            Err(e) => {
                release();
                return Err(e).with_context(|| format!("opening {LOCK_FILE}"));
            }
        };
        let mut told = false;
        loop {
            // SAFETY: flock(2) on a file descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(ClusterLock { _file: file });
            }
            if Instant::now() >= deadline {
                release();
                bail!("another process held {LOCK_FILE} (a Kraken cluster) for {timeout:?}");
            }
            if !told {
                eprintln!("kraken harness: waiting for another Kraken cluster ({LOCK_FILE})");
                told = true;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        // The flock goes with the file descriptor.
        *IN_USE.lock().unwrap_or_else(|e| e.into_inner()) = false;
        RELEASED.notify_one();
    }
}

/// Kills what a cluster of a dead test process left behind (its groups are in STATE_FILE).
/// Only processes named like Kraken's binaries or nginx are touched.
fn kill_leftovers() {
    let Ok(state) = fs::read_to_string(STATE_FILE) else {
        return;
    };
    let pgids: Vec<u32> = state
        .lines()
        .filter_map(|l| l.strip_prefix("pgid "))
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let ours = |p: &ProcEntry| {
        pgids.contains(&p.pgid)
            && p.state != 'Z'
            && (p.comm == "nginx" || Component::ALL.iter().any(|c| c.name() == p.comm))
    };
    let victims: Vec<u32> = proc_entries()
        .iter()
        .filter(|p| ours(p))
        .map(|p| p.pid)
        .collect();
    if !victims.is_empty() {
        eprintln!(
            "kraken harness: killing {} processes left by an earlier cluster",
            victims.len()
        );
        for pid in &victims {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && proc_entries().iter().any(ours) {
            thread::sleep(Duration::from_millis(10));
        }
    }
    for l in state.lines() {
        if let Some(t) = l.strip_prefix("testfs ") {
            let _ = fs::remove_dir_all(t.trim());
        }
        if let Some(d) = l.strip_prefix("dir ") {
            let _ = fs::remove_dir_all(d.trim());
        }
    }
    let _ = fs::remove_file(STATE_FILE);
}

/// The component that serves a devcluster port.
fn component_of_port(p: u16) -> Component {
    match p {
        ports::TESTFS => Component::Testfs,
        ports::PROXY => Component::Proxy,
        ports::ORIGIN_PEER | ports::ORIGIN => Component::Origin,
        ports::TRACKER => Component::Tracker,
        ports::BUILD_INDEX => Component::BuildIndex,
        _ => Component::Agent,
    }
}

fn check_ports_free() -> Result<()> {
    let busy: Vec<u16> = ports::ALL
        .iter()
        .copied()
        .filter(|p| {
            matches!(TcpListener::bind(("0.0.0.0", *p)), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
        })
        .collect();
    if busy.is_empty() {
        return Ok(());
    }
    let listeners = Command::new("ss")
        .arg("-ltnp")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let holders: Vec<&str> = listeners
        .lines()
        .filter(|l| busy.iter().any(|p| l.contains(&format!(":{p} "))))
        .collect();
    bail!(
        "Kraken's fixed ports {busy:?} are in use by something else:\n{}",
        holders.join("\n")
    )
}

fn signal_group(pgid: u32, sig: i32) {
    if let Ok(g) = i32::try_from(pgid)
        && g > 1
    {
        // SAFETY: kill(2) on a process group we created.
        unsafe { libc::kill(-g, sig) };
    }
}

fn hostname() -> Result<String> {
    let h = fs::read_to_string("/proc/sys/kernel/hostname").context("reading the hostname")?;
    Ok(h.trim().to_owned())
}

/// The /tmp/kraken-testfs* directories (testfs makes one per run and never removes it when
/// killed).
fn testfs_dirs() -> BTreeSet<PathBuf> {
    fs::read_dir("/tmp")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("kraken-testfs"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

struct ProcEntry {
    pid: u32,
    ppid: u32,
    pgid: u32,
    state: char,
    comm: String,
}

fn proc_stat(pid: u32) -> Option<ProcEntry> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let mut rest = text[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    Some(ProcEntry {
        pid,
        ppid,
        pgid,
        state,
        comm,
    })
}

fn proc_entries() -> Vec<ProcEntry> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(proc_stat)
                .collect()
        })
        .unwrap_or_default()
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Kraken-specific check of a response's status, naming the component in the error.
trait Expect: Sized {
    fn expect(self, status: u16, method: &str, c: Component, target: &str) -> Result<Response>;
}

impl Expect for Response {
    fn expect(self, status: u16, method: &str, c: Component, target: &str) -> Result<Response> {
        if self.status != status {
            let body = String::from_utf8_lossy(&self.body[..self.body.len().min(500)]).into_owned();
            bail!(
                "{method} http://{}{target} ({}): HTTP {}: {body}",
                c.addr(),
                c.name(),
                self.status
            );
        }
        Ok(self)
    }
}

/// `n` random bytes from /dev/urandom.
pub fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf)
}

/// SHA-256 of `data` as lower-case hex (Kraken's digests are `sha256:<hex>`).
pub fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    let mut w = [0u32; 64];
    for block in msg.chunks_exact(64) {
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}
