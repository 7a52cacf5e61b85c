//! `kraken-tracer config --print`: CLI > env > config file > defaults, through the real binary
//! (unprivileged; build it first with `cargo build -p tracer-user`).

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use tracer_it::tracer_bin;

/// A config file in the temp dir, removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(name: &str, text: &str) -> TempConfig {
        let path = std::env::temp_dir().join(format!(
            "kraken-tracer-it-config-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write config file");
        TempConfig(path)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the binary with none of the caller's KRAKEN_TRACER_* / OTEL_* variables, plus `env`.
fn tracer(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(tracer_bin());
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("KRAKEN_TRACER_") || n.starts_with("OTEL_") {
            cmd.env_remove(&name);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run kraken-tracer (cargo build -p tracer-user first)")
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kraken-tracer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

/// The one error line of a failed run.
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    let line = lines[0];
    assert!(line.starts_with("kraken-tracer: error: "), "{line}");
    line.to_owned()
}

#[test]
fn env_beats_file_beats_defaults() {
    let file = TempConfig::new(
        "layers",
        "pid = [123, 456]\n\
         otlp-endpoint = \"http://jaeger:4317\"\n\
         sample-ratio = 0.2\n\
         service-name = \"from-file\"\n\
         keep-errors = true\n\
         stdout = true\n\
         sample = [\"/health=0\", \"/announce/**=0.05\"]\n\
         keep-slower-than = \"500ms\"\n",
    );
    let out = tracer(
        &["config", "--print", "--keep-buffer-spans", "100"],
        &[
            ("KRAKEN_TRACER_CONFIG", &file.path()),
            ("OTEL_TRACES_SAMPLER_ARG", "0.3"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("KRAKEN_TRACER_STDOUT", "false"),
            ("KRAKEN_TRACER_PID", "7,8"),
        ],
    );
    let text = stdout_ok(&out);
    assert_line(
        &text,
        &format!("# config file: {}  (env KRAKEN_TRACER_CONFIG)", file.path()),
    );
    // env > file
    assert_line(&text, "sample-ratio = 0.3  # env OTEL_TRACES_SAMPLER_ARG");
    assert_line(
        &text,
        "service-name = \"from-env\"  # env OTEL_SERVICE_NAME",
    );
    assert_line(&text, "stdout = false  # env KRAKEN_TRACER_STDOUT");
    assert_line(&text, "pid = [7, 8]  # env KRAKEN_TRACER_PID");
    // env > default
    assert_line(
        &text,
        "otlp-protocol = \"http/protobuf\"  # env OTEL_EXPORTER_OTLP_PROTOCOL",
    );
    // file > default
    assert_line(&text, "otlp-endpoint = \"http://jaeger:4317\"  # file");
    assert_line(&text, "keep-errors = true  # file");
    assert_line(
        &text,
        "sample = [\"/health=0\", \"/announce/**=0.05\"]  # file",
    );
    assert_line(&text, "keep-slower-than = \"500ms\"  # file");
    // cli, defaults
    assert_line(&text, "keep-buffer-spans = 100  # cli");
    assert_line(&text, "drain-interval = \"10ms\"  # default");
    assert_line(&text, "# metrics-addr is not set  # default");

    // cli > env
    let out = tracer(
        &["config", "--print", "--service-name", "from-cli"],
        &[("OTEL_SERVICE_NAME", "from-env")],
    );
    assert_line(&stdout_ok(&out), "service-name = \"from-cli\"  # cli");
}

#[test]
fn printed_config_loads_back() {
    let file = TempConfig::new("round-in", "pid = [1]\nkeep-errors = true\n");
    let args = [
        "config",
        "--print",
        "--config",
        &file.path(),
        "--otlp-endpoint=http://collector:4318",
        "--sample=/blobs/**=0.5",
    ];
    let first = stdout_ok(&tracer(&args, &[("OTEL_TRACES_SAMPLER_ARG", "0.4")]));
    let saved = TempConfig::new("round-out", &first);
    let second = stdout_ok(&tracer(
        &["config", "--print", "--config", &saved.path()],
        &[],
    ));
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split("  # ").next().unwrap_or(l).to_owned())
            .collect()
    };
    assert_eq!(values(&first), values(&second), "{first}\n---\n{second}");
    assert_line(&second, "sample-ratio = 0.4  # file");
}

#[test]
fn bad_file_value_is_one_line_naming_the_key() {
    let file = TempConfig::new("bad", "pid = [1]\nsample-ratio = 2\n");
    let line = error_line(&tracer(
        &["config", "--print", "--config", &file.path()],
        &[],
    ));
    assert_eq!(
        line,
        format!(
            "kraken-tracer: error: config file {}: sample-ratio: 2 is outside 0.0–1.0",
            file.path()
        )
    );
    let file = TempConfig::new("unknown", "sample-rate = 0.5\n");
    let line = error_line(&tracer(&["attach", "--config", &file.path()], &[]));
    assert!(line.contains("unknown key \"sample-rate\""), "{line}");
    let line = error_line(&tracer(
        &["config", "--print"],
        &[("KRAKEN_TRACER_CONFIG", "/nonexistent/kraken-tracer.toml")],
    ));
    assert!(
        line.contains("config file /nonexistent/kraken-tracer.toml: "),
        "{line}"
    );
}
