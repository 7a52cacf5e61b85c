//! `cargo xtask demo`: set-up, build, start a local Jaeger v2 and two Go servers (frontend
//! calls backend), trace both with kraken-tracer, send traffic, and show where to look.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::util::{root, run, step};

const QUERY: &str = "127.0.0.1:16686";

#[derive(clap::Args)]
pub struct Options {
    /// Rounds of demo traffic (each: a call, a call from a spawned goroutine, an error).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Exit when the traffic is done instead of keeping Jaeger up until Ctrl-C.
    #[arg(long)]
    pub no_wait: bool,
    /// Trace a local Kraken cluster (agent, origin, tracker) instead of the Go fixture servers.
    #[arg(long)]
    pub kraken: bool,
}

/// Kills the child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

fn start_server(bin: &Path) -> Result<(Guard, String)> {
    let mut child = Command::new(bin).stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("fixture stdout")?).read_line(&mut line)?;
    let addr = line.trim().trim_start_matches("listening on ").to_owned();
    Ok((Guard(child), addr))
}

pub fn main(opts: &Options) -> Result<()> {
    crate::setup::main(&crate::setup::Options::default())?;
    if opts.kraken {
        let env: &[(&str, &str)] = if opts.no_wait {
            &[("KRAKEN_TRACER_DEMO_NO_WAIT", "1")]
        } else {
            &[]
        };
        return crate::example("kraken_demo", env);
    }
    crate::util::build_release_tracer()?;
    let fixtures = crate::fixtures::build_all()?;
    let server = fixtures
        .iter()
        .find(|p| p.ends_with("httpserver"))
        .context("httpserver fixture")?;

    if TcpStream::connect(QUERY).is_ok() {
        bail!(
            "something already listens on {QUERY} (a Jaeger from an earlier demo?); stop it first"
        );
    }
    let jaeger_log = std::env::temp_dir().join("kraken-tracer-demo-jaeger.log");
    let _jaeger = Guard(
        Command::new(crate::jaeger::bin_path())
            .arg("--config")
            .arg(root().join("deploy/jaeger/config.yaml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&jaeger_log)?)
            .spawn()
            .context("starting jaeger")?,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(QUERY, "/api/v3/services")
        .map(|(c, _)| c)
        .unwrap_or(0)
        != 200
    {
        if Instant::now() > deadline {
            bail!("jaeger did not come up; see {}", jaeger_log.display());
        }
        thread::sleep(Duration::from_millis(100));
    }
    step(&format!(
        "demo: Jaeger v2 {} up: UI and API on http://{QUERY}",
        crate::jaeger::version()
    ));

    let (front, front_addr) = start_server(server)?;
    let (back, back_addr) = start_server(server)?;
    step(&format!(
        "demo: Go servers frontend pid {} on {front_addr}, backend pid {} on {back_addr}",
        front.0.id(),
        back.0.id()
    ));
    let mut tracer = Command::new(root().join("target/release/kraken-tracer"))
        .args(["attach", "--stdout", "--sample-ratio", "1"])
        .args([
            "--pid",
            &front.0.id().to_string(),
            "--pid",
            &back.0.id().to_string(),
        ])
        .arg("--service-name-for")
        .arg(format!("{}=demo-frontend", front.0.id()))
        .arg("--service-name-for")
        .arg(format!("{}=demo-backend", back.0.id()))
        .stderr(Stdio::piped())
        .spawn()?;
    let mut log = BufReader::new(tracer.stderr.take().context("tracer stderr")?);
    let mut attached = 0;
    let mut l = String::new();
    while attached < 2 && log.read_line(&mut l)? > 0 {
        eprint!("{l}");
        if l.contains("attached pid") {
            attached += 1;
        }
        l.clear();
    }
    if attached < 2 {
        let _ = tracer.kill();
        bail!("the tracer did not attach (see its log above)");
    }
    let echo = thread::spawn(move || {
        for l in log.lines().map_while(Result::ok) {
            eprintln!("{l}");
        }
    });
    for _ in 0..opts.rounds {
        for path in [
            format!("/call?url=http://{back_addr}/hello"),
            format!("/spawn?url=http://{back_addr}/status/503"),
            "/status/500".to_owned(),
        ] {
            http_get(&front_addr, &path)?;
        }
        thread::sleep(Duration::from_millis(200));
    }
    // SIGTERM flushes the export queue at once (instead of waiting for the 5 s batch timer).
    run(Command::new("kill").args(["-TERM", &tracer.id().to_string()]))?;
    let status = tracer.wait()?;
    let _ = echo.join();
    step(&format!("demo: tracer exited with {status}"));
    let (_, services) = http_get(QUERY, "/api/v3/services")?;
    step(&format!("demo: services in Jaeger: {}", services.trim()));
    println!(
        "\nThe traces are in Jaeger (frontend server span → its client span → the backend's server \
         span, one trace per request: one tracer links the processes it traces):\n  \
         http://{QUERY}/api/traces?service=demo-frontend&limit=20\n  \
         http://{QUERY}/api/v3/traces?query.service_name=demo-frontend&query.num_traces=20&\
         query.start_time_min=2000-01-01T00:00:00Z&query.start_time_max=2100-01-01T00:00:00Z\n\
         (Jaeger built from the Go module proxy has no web UI assets; point a full Jaeger or \
         Grafana at it, or use the API above. The trace trees were also printed above.)"
    );
    if opts.no_wait {
        return Ok(());
    }
    println!("Jaeger keeps running until you press Ctrl-C.");
    drop((front, back));
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
