//! Simulated nodes: network namespaces joined by a bridge, each with its own address
//! (`10.77.<k>.<n>/24`; the root namespace is `.254` on the bridge), and nginx in front of a
//! server on a unix socket, as Kraken runs it. Everything is removed on drop.
//!
//! The kernel is shared, so a tracer needs no namespace of its own: it runs in the root
//! namespace and traces only its node's processes (by pid).

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::wait_until;

/// One simulated node.
pub struct Node {
    pub name: String,
    /// The namespace (`ip netns` name).
    pub ns: String,
    pub addr: Ipv4Addr,
}

/// A set of nodes on one bridge.
pub struct Net {
    pub nodes: Vec<Node>,
    bridge: String,
    /// A directory for sockets and configs, removed on drop.
    pub dir: PathBuf,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {args:?}"))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    /// Creates one namespace per name, with addresses 10.77.K.1, .2, ... in that order (K
    /// differs per `Net` of this process, so parallel tests don't share a subnet).
    pub fn new(names: &[&str]) -> Result<Net> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        // Interface names are at most 15 bytes; the pid keeps concurrent test binaries apart.
        let tag = format!("{:x}{k:x}", std::process::id() % 0xffff);
        let subnet = 10 + (std::process::id() % 20) * 10 + k;
        if subnet > 250 {
            bail!("too many test networks");
        }
        let dir = std::env::temp_dir().join(format!("kt-netns-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let bridge = format!("ktb{tag}");
        let mut net = Net {
            nodes: Vec::new(),
            bridge: bridge.clone(),
            dir,
        };
        let _ = ip(&["link", "del", &bridge]);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.77.{subnet}.254/24"),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("kt-{tag}-{name}");
            let host_end = format!("ktv{tag}{i}");
            let addr = Ipv4Addr::new(10, 77, subnet as u8, (i + 1) as u8);
            let _ = ip(&["netns", "del", &ns]);
            ip(&["netns", "add", &ns])?;
            net.nodes.push(Node {
                name: (*name).to_owned(),
                ns: ns.clone(),
                addr,
            });
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &host_end, "master", &bridge])?;
            ip(&["link", "set", &host_end, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// `program` run inside the node's namespace (`ip netns exec` execs it: same pid).
    pub fn command(&self, node: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.node(node).ns]).arg(program);
        c
    }

    /// Starts nginx in `node`, listening on `port` of the node's address and forwarding
    /// everything to `upstream` (a unix socket) the way Kraken's nginx does: HTTP/1.0, one
    /// request per upstream connection, request bodies buffered first.
    pub fn nginx(&self, node: &str, port: u16, upstream: &Path) -> Result<Nginx> {
        let n = self.node(node);
        let dir = self.dir.join(format!("nginx-{node}"));
        fs::create_dir_all(&dir)?;
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             client_max_body_size 64m;\n\
             server {{\n    listen {addr}:{port};\n    location / {{ proxy_pass http://unix:{up}; }}\n  }}\n}}\n",
            addr = n.addr,
            up = upstream.display(),
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf)?;
        let child = self
            .command(node, Path::new("/usr/sbin/nginx"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting nginx")?;
        let mut ng = Nginx {
            child,
            addr: SocketAddr::from((n.addr, port)),
            dir,
        };
        let addr = ng.addr;
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if !up || !matches!(ng.child.try_wait(), Ok(None)) {
            bail!(
                "nginx on {addr} did not come up: {}",
                fs::read_to_string(ng.dir.join("error.log")).unwrap_or_default()
            );
        }
        Ok(ng)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.nodes {
            let _ = ip(&["netns", "del", &n.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An nginx master process; stopped on drop.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (a SIGKILL would leave them running).
        if let Ok(pid) = i32::try_from(self.child.id()) {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}
