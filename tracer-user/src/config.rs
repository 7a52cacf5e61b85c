//! Command line (clap derive, with `KRAKEN_TRACER_*` / `OTEL_*` environment fallbacks).
//!
//! `config_file::parse_cli` layers an optional TOML config file under the CLI and environment.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    config_file::EffectiveConfig,
    rules::{PathGlob, SampleRule},
    socket::SocketProbes,
};

#[derive(Parser, Debug)]
#[command(
    name = "kraken-tracer",
    version,
    about = "Zero-instrumentation eBPF tracing for Uber Kraken (Go)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach to running Go processes and trace them until they exit or SIGINT/SIGTERM.
    Attach(AttachArgs),
    /// Print which kernel features are available and which fallbacks will be used.
    Features,
    /// Show what the tracer would probe in an executable (Go version, symbols, sites, offsets).
    Inspect(InspectArgs),
    /// Show the effective configuration of `attach` with these flags: `config --print`.
    ///
    /// Takes the same flags, environment variables and config file as `attach` and, with
    /// --print, prints the result as a TOML config file (usable with --config), each value
    /// followed by its source: cli, env NAME, file or default. Precedence: CLI > env > config
    /// file > defaults.
    Config(ConfigArgs),
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Print the effective configuration (without it, `config` only prints a usage hint).
    #[arg(long)]
    pub print: bool,
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Values and their sources; filled in by `config_file::parse_cli`.
    #[arg(skip)]
    pub effective: EffectiveConfig,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Process to trace (repeatable; at least one for `attach`, unless --follow-exe/--follow-name).
    #[arg(long = "pid", env = "KRAKEN_TRACER_PID", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Configuration file (TOML; keys are these flags' long names). CLI > env > file > defaults.
    #[arg(long, env = "KRAKEN_TRACER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print finished traces as trees on stdout.
    #[arg(long, env = "KRAKEN_TRACER_STDOUT")]
    pub stdout: bool,
    /// Print one line per raw probe event on stdout (debugging the probes themselves).
    #[arg(long, env = "KRAKEN_TRACER_EVENTS")]
    pub events: bool,
    /// OTLP endpoint (gRPC default http://127.0.0.1:4317, HTTP default http://127.0.0.1:4318).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: grpc or http/protobuf.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "grpc")]
    pub otlp_protocol: String,
    /// Don't export (with --stdout: print only).
    #[arg(long, env = "KRAKEN_TRACER_NO_EXPORT")]
    pub no_export: bool,
    /// Fraction of traces kept (head sampling by trace id), 0.0–1.0, for paths no rule matches.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 0.1, value_parser = parse_ratio)]
    pub sample_ratio: f64,
    /// Path sampling rule GLOB=RATIO (repeatable; first match wins; tried before the defaults).
    /// A ratio of 0 drops the request in the kernel.
    #[arg(long = "sample", env = "KRAKEN_TRACER_SAMPLE", value_delimiter = ',', value_parser = SampleRule::parse)]
    pub sample: Vec<SampleRule>,
    /// Don't append the default rules (/health=0, /readiness=0, /announce/**=0.05, blobs=0.2).
    #[arg(long, env = "KRAKEN_TRACER_NO_DEFAULT_RULES")]
    pub no_default_rules: bool,
    /// Trace only requests whose path matches one of these globs (repeatable).
    #[arg(long = "include-path", env = "KRAKEN_TRACER_INCLUDE_PATH", value_delimiter = ',', value_parser = parse_glob)]
    pub include_path: Vec<PathGlob>,
    /// Never trace requests whose path matches one of these globs (repeatable; wins over
    /// --include-path).
    #[arg(long = "exclude-path", env = "KRAKEN_TRACER_EXCLUDE_PATH", value_delimiter = ',', value_parser = parse_glob)]
    pub exclude_path: Vec<PathGlob>,
    /// Export unsampled traces that contain a 5xx response or a failed call.
    #[arg(long, env = "KRAKEN_TRACER_KEEP_ERRORS")]
    pub keep_errors: bool,
    /// Export unsampled traces that contain a span slower than this (e.g. 500ms).
    #[arg(long, env = "KRAKEN_TRACER_KEEP_SLOWER_THAN", value_parser = parse_duration)]
    pub keep_slower_than: Option<Duration>,
    /// With --keep-errors/--keep-slower-than: most spans of unsampled traces held while their
    /// trace is open (oldest traces are let go first, counted).
    #[arg(long, env = "KRAKEN_TRACER_KEEP_BUFFER_SPANS", default_value_t = 8192)]
    pub keep_buffer_spans: usize,
    /// Let the kernel copy server requests' query strings (exported as `url.query`). Off by
    /// default: only the path leaves the traced process (queries often carry tokens).
    #[arg(long, env = "KRAKEN_TRACER_CAPTURE_QUERY")]
    pub capture_query: bool,
    /// Insert a W3C `traceparent` into the HTTP/1 requests traced processes send (sk_msg), so
    /// the tracers of other nodes continue the same traces: on (default) or off (no sock_ops
    /// or sk_msg program is attached at all).
    #[arg(
        long,
        env = "KRAKEN_TRACER_PROPAGATION",
        value_enum,
        default_value = "on"
    )]
    pub propagation: Propagation,
    /// Serve Prometheus self-metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, env = "KRAKEN_TRACER_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// service.name for every traced process (default: each executable's name).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,
    /// service.name for one process, as PID=NAME (repeatable; wins over --service-name).
    #[arg(long = "service-name-for", value_parser = parse_pid_name)]
    pub service_name_for: Vec<(u32, String)>,
    /// How often the ring buffer is drained when the kernel has not woken the reader.
    #[arg(long, env = "KRAKEN_TRACER_DRAIN_INTERVAL", default_value = "10ms", value_parser = parse_duration)]
    pub drain_interval: Duration,
    /// Where a verifier log is written if the kernel rejects a program (default: the temp dir).
    #[arg(long, env = "KRAKEN_TRACER_VERIFIER_LOG_DIR")]
    pub verifier_log_dir: Option<PathBuf>,
    /// Keep running after every traced process has exited.
    #[arg(long, env = "KRAKEN_TRACER_KEEP_RUNNING")]
    pub keep_running: bool,
    /// Trace every process running this executable, now and as they start (repeatable; makes
    /// --pid optional; the tracer keeps running). Matched by file identity, so a path through
    /// /proc/PID/root reaches a container's executable and an upgraded file is followed too.
    #[arg(
        long = "follow-exe",
        env = "KRAKEN_TRACER_FOLLOW_EXE",
        value_delimiter = ','
    )]
    pub follow_exe: Vec<PathBuf>,
    /// Trace every process whose executable has this file name (e.g. kraken-agent), now and as
    /// they start (repeatable; makes --pid optional; nothing need exist at start). For a
    /// DaemonSet, where Kraken's binaries live only in Kraken's containers.
    #[arg(
        long = "follow-name",
        env = "KRAKEN_TRACER_FOLLOW_NAME",
        value_delimiter = ','
    )]
    pub follow_name: Vec<String>,
    /// With --follow-exe/--follow-name: how often /proc is scanned for new processes.
    #[arg(long, env = "KRAKEN_TRACER_FOLLOW_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub follow_interval: Duration,
    /// Attach to a binary without DWARF whose Go version is outside the verified offsets table,
    /// using the nearest table row (fields may be read at wrong offsets). Off: such a process
    /// is not attached.
    #[arg(long, env = "KRAKEN_TRACER_ALLOW_UNVERIFIED_OFFSETS")]
    pub allow_unverified_offsets: bool,
    /// Kernel socket probes counting each traced process's TCP bytes (metrics, and
    /// kraken.process.tcp.* on server spans): off, auto (kprobes, else the sock tracepoints of
    /// Linux >= 6.3, else off), kprobe or tracepoint. Forcing one the kernel lacks is an error.
    /// Off by default: they fire on every TCP send/receive of every process on the node
    /// (~0.2-0.4 µs each, measured on the tracepoint path), traced or not.
    #[arg(long, env = "KRAKEN_TRACER_SOCKET_PROBES", value_enum, default_value_t = SocketProbes::Off)]
    pub socket_probes: SocketProbes,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// An executable path, or a PID.
    pub target: String,
}

/// A path glob (see `rules`).
pub fn parse_glob(s: &str) -> Result<PathGlob, String> {
    s.parse()
}

/// A sampling ratio in [0, 1].
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number: {s:?} (a ratio from 0.0 to 1.0)"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0.0–1.0"))
    }
}

/// "PID=NAME".
pub fn parse_pid_name(s: &str) -> Result<(u32, String), String> {
    let (pid, name) = s
        .split_once('=')
        .ok_or_else(|| format!("expected PID=NAME, got {s:?}"))?;
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("not a PID: {pid:?}"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err("empty service name".into());
    }
    Ok((pid, name.to_owned()))
}

/// Parses "250ms", "5s", "2m", "1500us" or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (e.g. 10ms, 5s)"))?;
    match unit {
        "" | "ms" => Ok(Duration::from_millis(n)),
        "us" | "µs" => Ok(Duration::from_micros(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!(
            "unknown duration unit {unit:?} in {s:?} (use us, ms, s or m)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_millis(7)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "kraken-tracer",
            "attach",
            "--pid",
            "1",
            "--pid",
            "2,3",
            "--stdout",
        ])
        .unwrap();
        let Command::Attach(a) = cli.command else {
            panic!("not attach")
        };
        assert_eq!(a.pids, vec![1, 2, 3]);
        assert!(a.stdout);
        let err = Cli::try_parse_from(["kraken-tracer", "attach", "--pid", "x"]).unwrap_err();
        assert!(err.to_string().contains("--pid"), "{err}");
        let err = Cli::try_parse_from([
            "kraken-tracer",
            "attach",
            "--pid",
            "1",
            "--sample-ratio",
            "2",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--sample-ratio"), "{err}");
        let cli = Cli::try_parse_from([
            "kraken-tracer",
            "attach",
            "--pid",
            "1",
            "--service-name-for",
            "1=origin",
        ])
        .unwrap();
        let Command::Attach(a) = cli.command else {
            panic!("not attach")
        };
        assert_eq!(a.service_name_for, vec![(1, "origin".to_owned())]);
        assert!(parse_pid_name("x=y").is_err());
        assert!(parse_pid_name("1=").is_err());
    }

    #[test]
    fn follow_flags() {
        let parse = |args: &[&str]| {
            let argv = ["kraken-tracer", "attach"].iter().chain(args);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Attach(a) => a,
                _ => panic!("not attach"),
            }
        };
        let a = parse(&["--follow-exe", "/usr/bin/a", "--follow-exe", "/b,/c"]);
        assert!(a.pids.is_empty());
        assert_eq!(
            a.follow_exe,
            ["/usr/bin/a", "/b", "/c"].map(PathBuf::from).to_vec()
        );
        assert_eq!(a.follow_interval, Duration::from_secs(1));
        assert!(!a.allow_unverified_offsets);
        let a = parse(&[
            "--follow-exe",
            "/a",
            "--follow-interval",
            "250ms",
            "--allow-unverified-offsets",
        ]);
        assert_eq!(a.follow_interval, Duration::from_millis(250));
        assert!(a.allow_unverified_offsets);
    }
}

/// `--propagation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Propagation {
    On,
    Off,
}
