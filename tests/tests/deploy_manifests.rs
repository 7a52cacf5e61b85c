//! `deploy/`: every manifest passes its validator, a deliberately broken copy fails it (so each
//! check is shown able to fail), and the facts that could drift from the tracer stay true: the
//! capability lists equal docs/capabilities.md's minimal set, the configuration files are
//! accepted by the real binary, the flags and ports used exist, and the DaemonSet's command, run
//! as it is deployed, finds a Kraken component by executable name and attaches to it.
//!
//! The validators are installed by `cargo xtask setup` (xtask/src/deploy.rs): kubernetes-validate
//! (PyPI), kustomize and compose-go's validator (Go module proxy) and systemd-analyze (Debian). A
//! missing one fails the test with that hint.

use std::{
    collections::BTreeSet,
    fs,
    io::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::Value;
use tracer_it::{Fixture, TracerProcess, fixture, procstat, tracer_bin, wait_until, workspace};

#[allow(dead_code)]
#[path = "../../xtask/src/cache.rs"]
mod cache;
#[allow(dead_code)]
#[path = "../../xtask/src/deploy_tools.rs"]
mod tools;

/// Kubernetes versions the manifests are checked against: the oldest that has every field used
/// (`securityContext.appArmorProfile` is 1.30) and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// The executable names of Kraken's components in its images: what every example configuration
/// follows.
const KRAKEN_EXECUTABLES: [&str; 5] = [
    "kraken-agent",
    "kraken-origin",
    "kraken-tracker",
    "kraken-build-index",
    "kraken-proxy",
];

fn deploy() -> PathBuf {
    workspace().join("deploy")
}

/// A validator installed by `cargo xtask setup`, or a failure that says to run it.
fn tool(path: &Path) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask setup` (it installs the deploy/ validators)",
        path.display()
    );
    path.to_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run `cargo xtask setup`)"))
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_ok(what: &str, out: &Output) {
    assert!(out.status.success(), "{what} failed:\n{}", text(out));
}

fn assert_fails(what: &str, out: &Output, mentions: &str) {
    assert!(
        !out.status.success(),
        "{what} accepted a broken copy:\n{}",
        text(out)
    );
    let all = text(out);
    assert!(
        all.contains(mentions),
        "{what} failed, but not because of {mentions:?}:\n{all}"
    );
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kraken-tracer-it-deploy-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, content).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `s` with `from` replaced once; fails if `from` is not in `s` (the broken copy would not be
/// broken).
fn break_text(s: &str, from: &str, to: &str) -> String {
    assert!(s.contains(from), "{from:?} not found: the test is stale");
    s.replacen(from, to, 1)
}

/// The workspace's version (`version = "..."` in Cargo.toml): the image tag the manifests use.
fn workspace_version() -> String {
    read(&workspace().join("Cargo.toml"))
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .expect("version in Cargo.toml")
        .trim_matches('"')
        .to_owned()
}

/// The minimal capability set, read from docs/capabilities.md ("## The minimal set" table).
fn minimal_capabilities() -> BTreeSet<String> {
    let doc = read(&workspace().join("docs/capabilities.md"));
    let section = doc
        .split("## The minimal set")
        .nth(1)
        .expect("docs/capabilities.md has a \"## The minimal set\" section");
    let caps: BTreeSet<String> = section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `CAP_"))
        .filter_map(|l| l.split('`').next())
        .map(|c| format!("CAP_{c}"))
        .collect();
    assert!(caps.len() >= 2, "no capability table found: {caps:?}");
    caps
}

/// Kubernetes and Compose spell capabilities without the CAP_ prefix.
fn without_prefix(caps: &BTreeSet<String>) -> BTreeSet<String> {
    caps.iter()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

/// The long flags `kraken-tracer attach --help` lists.
fn attach_flags() -> BTreeSet<String> {
    let out = run(Command::new(tracer_bin()).args(["attach", "--help"]));
    assert_ok("kraken-tracer attach --help", &out);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

fn assert_flags_exist(what: &str, args: &[String]) {
    let known = attach_flags();
    for a in args.iter().filter_map(|a| a.strip_prefix("--")) {
        let name = a.split('=').next().unwrap_or_default();
        assert!(
            known.contains(name),
            "{what} passes --{name}, which `kraken-tracer attach` does not have"
        );
    }
}

/// `kraken-tracer config --print --config FILE`, with none of the caller's KRAKEN_TRACER_* /
/// OTEL_* variables.
fn config_print(file: &Path) -> Output {
    let mut cmd = Command::new(tracer_bin());
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("KRAKEN_TRACER_") || n.starts_with("OTEL_") {
            cmd.env_remove(&name);
        }
    }
    run(cmd.args(["config", "--print", "--config"]).arg(file))
}

/// One value of a TOML config file, as `config --print` shows it (`key = value  # file`).
fn printed_value(printed: &str, key: &str) -> Option<String> {
    printed.lines().find_map(|l| {
        let (k, rest) = l.split_once(" = ")?;
        (k == key).then(|| rest.split("  #").next().unwrap_or(rest).trim().to_owned())
    })
}

/// A printed list of strings (`["a", "b"]`: TOML and JSON alike).
fn printed_list(printed: &str, key: &str) -> Vec<String> {
    let value = printed_value(printed, key).unwrap_or_else(|| panic!("{key} is not printed"));
    serde_json::from_str(&value).unwrap_or_else(|e| panic!("{key} = {value}: {e}"))
}

/// `config --print` of `file`, which must succeed.
fn printed_config(file: &Path) -> String {
    let out = config_print(file);
    assert_ok(&format!("config --print of {}", file.display()), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The configuration follows every Kraken component by name, and no path.
fn assert_follows_kraken_by_name(file: &Path) {
    let printed = printed_config(file);
    assert_eq!(
        printed_list(&printed, "follow-name"),
        KRAKEN_EXECUTABLES,
        "follow-name of {}",
        file.display()
    );
    assert_eq!(
        printed_list(&printed, "follow-exe"),
        Vec::<String>::new(),
        "follow-exe of {}",
        file.display()
    );
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

fn kustomize_build(dir: &Path) -> Output {
    run(Command::new(tool(&tools::kustomize()))
        .arg("build")
        .arg(dir))
}

/// `kustomize build deploy/kubernetes`: the manifests `kubectl apply -k` would send.
fn rendered_manifests() -> String {
    let out = kustomize_build(&deploy().join("kubernetes"));
    assert_ok("kustomize build deploy/kubernetes", &out);
    String::from_utf8(out.stdout).expect("kustomize output is UTF-8")
}

fn kubernetes_validate(file: &Path, version: &str) -> Output {
    run(Command::new(tool(&tools::kubernetes_validate()))
        .args(["--strict", "--kubernetes-version", version])
        .arg(file))
}

/// Every document of a YAML stream, parsed by the validators' own YAML library (PyYAML).
fn yaml_documents(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(tool(&tools::venv_python()))
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the deploy venv's python (run `cargo xtask setup`)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write YAML");
    let out = child.wait_with_output().expect("python output");
    assert_ok("parsing YAML", &out);
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

fn find_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the rendered manifests"))
}

#[test]
fn kubernetes_manifests_pass_kubernetes_validate() {
    let yaml = rendered_manifests();
    let tmp = TempDir::new("k8s");
    let file = tmp.write("rendered.yaml", &yaml);
    for version in KUBERNETES_VERSIONS {
        let out = kubernetes_validate(&file, version);
        assert_ok(&format!("kubernetes-validate (Kubernetes {version})"), &out);
        let report = String::from_utf8_lossy(&out.stdout);
        for kind in [
            "namespace",
            "serviceaccount",
            "configmap",
            "service",
            "daemonset",
        ] {
            assert!(
                report.contains(&format!("passed for resource {kind}/")),
                "kubernetes-validate did not check a {kind}:\n{report}"
            );
        }
    }
}

#[test]
fn kubernetes_validation_rejects_broken_manifests() {
    let yaml = rendered_manifests();
    let tmp = TempDir::new("k8s-broken");
    // A misspelt field (strict mode) and a wrong type.
    let misspelt = tmp.write(
        "misspelt.yaml",
        &break_text(&yaml, "hostPID: true", "hostPid: true"),
    );
    assert_fails(
        "kubernetes-validate",
        &kubernetes_validate(&misspelt, "1.37.0"),
        "hostPid",
    );
    let wrong_type = tmp.write(
        "wrong-type.yaml",
        &break_text(
            &yaml,
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: yes please",
        ),
    );
    assert_fails(
        "kubernetes-validate",
        &kubernetes_validate(&wrong_type, "1.37.0"),
        "readOnlyRootFilesystem",
    );
    // A field newer than the oldest version checked is caught there.
    let good = tmp.write("good.yaml", &yaml);
    assert_fails(
        "kubernetes-validate (Kubernetes 1.29)",
        &kubernetes_validate(&good, "1.29.0"),
        "appArmorProfile",
    );
    // kustomize refuses a kustomization naming a missing resource.
    let dir = tmp.0.join("kustomize");
    fs::create_dir_all(&dir).expect("mkdir");
    for entry in fs::read_dir(deploy().join("kubernetes")).expect("deploy/kubernetes") {
        let p = entry.expect("entry").path();
        fs::copy(&p, dir.join(p.file_name().expect("name"))).expect("copy");
    }
    let k = dir.join("kustomization.yaml");
    fs::write(
        &k,
        break_text(&read(&k), "- daemonset.yaml", "- daemonsets.yaml"),
    )
    .expect("write");
    assert_fails("kustomize build", &kustomize_build(&dir), "daemonsets.yaml");
}

#[test]
fn daemonset_keeps_its_invariants() {
    let docs = yaml_documents(&rendered_manifests());
    let ds = find_kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "hostPID");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["tolerations"][0]["operator"], "Exists",
        "tolerates every taint"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["image"],
        format!(
            "registry.example.com/kraken/kraken-tracer:{}",
            workspace_version()
        ),
        "the image placeholder, tagged with the workspace version"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(
        strings(&sc["capabilities"]["add"]),
        without_prefix(&minimal_capabilities()),
        "capabilities.add must be docs/capabilities.md's minimal set"
    );
    assert_eq!(
        strings(&sc["capabilities"]["drop"]),
        BTreeSet::from(["ALL".to_owned()])
    );
    // The API server rejects allowPrivilegeEscalation=false together with SYS_ADMIN.
    assert!(sc.get("allowPrivilegeEscalation").is_none());
    for what in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][what][res].is_string(),
                "resources.{what}.{res}"
            );
        }
    }

    // Host paths, mounted read-only where the container expects them.
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    for path in ["/sys/kernel/btf", "/sys/kernel/tracing"] {
        let vol = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == path)
            .unwrap_or_else(|| panic!("no hostPath volume {path}"));
        let mount = mounts
            .iter()
            .find(|m| m["name"] == vol["name"])
            .unwrap_or_else(|| panic!("hostPath {path} is not mounted"));
        assert_eq!(mount["mountPath"], path);
        assert_eq!(mount["readOnly"], true, "{path} read-only");
    }

    // The configuration: the generated ConfigMap holds deploy/kubernetes/config.toml, and the
    // tracer is pointed at it where it is mounted.
    let cm = find_kind(&docs, "ConfigMap");
    let config_toml = read(&deploy().join("kubernetes/config.toml"));
    assert_eq!(cm["data"]["config.toml"], config_toml.as_str());
    let config_vol = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == cm["metadata"]["name"])
        .expect("a volume of the generated ConfigMap");
    let config_mount = mounts
        .iter()
        .find(|m| m["name"] == config_vol["name"])
        .expect("the ConfigMap is mounted");
    let config_path = format!(
        "{}/config.toml",
        config_mount["mountPath"].as_str().expect("mountPath")
    );
    let args: Vec<String> = strings_in_order(&c["args"]);
    let at = args
        .iter()
        .position(|a| a == "--config")
        .expect("--config in args");
    assert_eq!(args.get(at + 1), Some(&config_path));
    assert_flags_exist("the DaemonSet", &args);
    assert_eq!(
        strings_in_order(&c["command"]),
        ["/usr/local/bin/kraken-tracer", "attach"]
    );
    // What to trace is the config file's: every Kraken component, by executable name.
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--follow") || a == "--pid"),
        "the DaemonSet's args override the config file's targets: {args:?}"
    );
    assert_follows_kraken_by_name(&deploy().join("kubernetes/config.toml"));

    // One metrics port everywhere: config.toml, the container port, the probes, the annotations.
    let printed = printed_config(&deploy().join("kubernetes/config.toml"));
    let addr = printed_value(&printed, "metrics-addr").expect("metrics-addr is set");
    let port = addr
        .trim_matches('"')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .expect("metrics port");
    let metrics_port = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert_eq!(metrics_port["containerPort"], port);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/metrics", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
}

fn strings_in_order(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Configuration files, through the real binary

#[test]
fn config_files_are_accepted_by_the_tracer() {
    for dir in ["kubernetes", "systemd", "compose"] {
        let file = deploy().join(dir).join("config.toml");
        let out = config_print(&file);
        assert_ok(&format!("config --print --config {}", file.display()), &out);
    }
    // The check can fail: a value out of range, and a key that is not a flag.
    let tmp = TempDir::new("config");
    let good = read(&deploy().join("kubernetes/config.toml"));
    let bad = tmp.write(
        "bad-value.toml",
        &break_text(&good, "sample-ratio = 0.1", "sample-ratio = 2"),
    );
    assert_fails("config --print", &config_print(&bad), "sample-ratio");
    let bad = tmp.write(
        "bad-key.toml",
        &break_text(&good, "keep-errors = true", "keep_errors = true"),
    );
    assert_fails("config --print", &config_print(&bad), "keep_errors");
}

// ---------------------------------------------------------------------------------------------
// Compose

fn compose_validate(file: &Path) -> Output {
    run(Command::new(tool(&tools::compose_spec()))
        .args(["--format", "json"])
        .arg(file)
        .current_dir(file.parent().expect("compose dir"))
        .env_remove("KRAKEN_TRACER_IMAGE"))
}

#[test]
fn compose_file_passes_the_compose_spec_validator() {
    let file = deploy().join("compose/docker-compose.yml");
    let out = compose_validate(&file);
    assert_ok("compose-spec validation", &out);
    let model: Value = serde_json::from_slice(&out.stdout).expect("compose model as JSON");
    let tracer = &model["services"]["kraken-tracer"];
    assert_eq!(
        tracer["image"],
        format!("kraken-tracer:{}", workspace_version())
    );
    assert_eq!(tracer["pid"], "host");
    assert_eq!(tracer["read_only"], true);
    assert_eq!(
        strings(&tracer["cap_add"]),
        without_prefix(&minimal_capabilities()),
        "cap_add must be docs/capabilities.md's minimal set"
    );
    assert_eq!(
        strings(&tracer["cap_drop"]),
        BTreeSet::from(["ALL".to_owned()])
    );
    let targets: BTreeSet<String> = tracer["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| v["target"].as_str().expect("target").to_owned())
        .collect();
    for path in [
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
        "/etc/kraken-tracer/config.toml",
    ] {
        assert!(targets.contains(path), "{path} not mounted: {targets:?}");
    }
    let command = strings_in_order(&tracer["command"]);
    assert_eq!(
        command,
        ["attach", "--config", "/etc/kraken-tracer/config.toml"],
        "the image's entrypoint is the tracer"
    );
    assert_flags_exist("the compose file", &command[1..]);
    assert_follows_kraken_by_name(&deploy().join("compose/config.toml"));
    // The Jaeger the tests use, and the tracer's OTLP endpoint pointing at it.
    let jaeger_version = read(&workspace().join("tests/jaeger/VERSION"));
    assert_eq!(
        model["services"]["jaeger"]["image"],
        format!(
            "jaegertracing/jaeger:{}",
            jaeger_version.trim().trim_start_matches('v')
        )
    );
    let printed = printed_config(&deploy().join("compose/config.toml"));
    assert_eq!(
        printed_value(&printed, "otlp-endpoint").as_deref(),
        Some("\"http://jaeger:4317\"")
    );
}

#[test]
fn compose_validation_rejects_a_broken_file() {
    let good = read(&deploy().join("compose/docker-compose.yml"));
    let tmp = TempDir::new("compose");
    // The broken copy sits next to copies of what it mounts, so only the break is wrong.
    tmp.write("config.toml", &read(&deploy().join("compose/config.toml")));
    let bad = tmp.write(
        "docker-compose.yml",
        &break_text(&good, "    pid: host\n", "    pids: host\n"),
    );
    assert_fails("compose-spec validation", &compose_validate(&bad), "pids");
    let bad = tmp.write(
        "docker-compose.yml",
        &break_text(&good, "\"127.0.0.1:9464:9464\"", "\"127.0.0.1:9464:94640\""),
    );
    assert_fails(
        "compose-spec validation",
        &compose_validate(&bad),
        "Invalid containerPort: 94640",
    );
}

// ---------------------------------------------------------------------------------------------
// systemd

/// The unit, with ExecStart pointing at the binary under test (systemd-analyze checks that the
/// command exists and is executable).
fn unit_for_test(tmp: &TempDir, unit: &str) -> PathBuf {
    let text = break_text(
        unit,
        "ExecStart=/usr/local/bin/kraken-tracer ",
        &format!("ExecStart={} ", tracer_bin().display()),
    );
    tmp.write("kraken-tracer.service", &text)
}

/// `systemd-analyze verify`: it exits 0 on many mistakes (an unknown key or value is "ignored"),
/// so any diagnostic counts as a failure.
fn systemd_verify(unit: &Path) -> (bool, String) {
    let out = run(Command::new(tool(Path::new("/usr/bin/systemd-analyze")))
        .args(["verify", "--man=no"])
        .arg(unit));
    let diagnostics = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    (out.status.success() && diagnostics.is_empty(), text(&out))
}

fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn systemd_unit_verifies_and_keeps_its_invariants() {
    let unit = read(&deploy().join("systemd/kraken-tracer.service"));
    let tmp = TempDir::new("systemd");
    let file = unit_for_test(&tmp, &unit);
    let (ok, report) = systemd_verify(&file);
    assert!(ok, "systemd-analyze verify:\n{report}");
    // The hardening stays: systemd's own exposure score (0 best, 10 worst) at most 3.5.
    let out = run(Command::new("/usr/bin/systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=35"])
        .arg(&file));
    assert_ok(
        "systemd-analyze security --offline=yes --threshold=35",
        &out,
    );

    let caps = minimal_capabilities();
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let values = unit_values(&unit, key);
        assert_eq!(values.len(), 1, "{key} set once");
        let set: BTreeSet<String> = values[0].split_whitespace().map(str::to_owned).collect();
        assert_eq!(
            set, caps,
            "{key} must be docs/capabilities.md's minimal set"
        );
    }
    assert_eq!(unit_values(&unit, "Restart"), ["on-failure"]);
    assert_eq!(unit_values(&unit, "NoNewPrivileges"), ["yes"]);
    // Hiding other processes would hide Kraken.
    assert!(unit_values(&unit, "ProtectProc").is_empty());
    assert!(unit_values(&unit, "ProcSubset").is_empty());
    let exec = unit_values(&unit, "ExecStart");
    let words: Vec<String> = exec[0].split_whitespace().map(str::to_owned).collect();
    assert_eq!(words[..2], ["/usr/local/bin/kraken-tracer", "attach"]);
    assert_flags_exist("the systemd unit", &words[2..]);
    let at = words
        .iter()
        .position(|w| w == "--config")
        .expect("--config");
    assert_eq!(words[at + 1], "/etc/kraken-tracer/config.toml");
    // The example config follows the Kraken components by name (follow-exe, the stricter
    // alternative, is only shown in a comment).
    let config = deploy().join("systemd/config.toml");
    assert_follows_kraken_by_name(&config);
    assert!(
        read(&config).contains("\n# follow-exe = [\"/usr/bin/kraken-agent\""),
        "deploy/systemd/config.toml no longer shows follow-exe as the alternative"
    );
}

#[test]
fn systemd_verification_rejects_a_broken_unit() {
    let unit = read(&deploy().join("systemd/kraken-tracer.service"));
    let tmp = TempDir::new("systemd-broken");
    for (from, to, mentions) in [
        ("Restart=on-failure", "Restart=sometimes", "sometimes"),
        (
            "NoNewPrivileges=yes",
            "NoNewPrivilege=yes",
            "NoNewPrivilege",
        ),
    ] {
        let file = unit_for_test(&tmp, &break_text(&unit, from, to));
        let (ok, report) = systemd_verify(&file);
        assert!(!ok, "systemd-analyze verify accepted {to}:\n{report}");
        assert!(report.contains(mentions), "{report}");
    }
    // A weakened unit fails the exposure threshold.
    let weak = unit
        .lines()
        .filter(|l| {
            !(l.starts_with("Protect")
                || l.starts_with("Private")
                || l.starts_with("Restrict")
                || l.starts_with("SystemCall"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let file = unit_for_test(&tmp, &weak);
    let out = run(Command::new("/usr/bin/systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=35"])
        .arg(&file));
    assert!(
        !out.status.success(),
        "a unit without hardening passed the threshold:\n{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// The image and its entrypoint

#[test]
fn dockerfile_matches_the_project() {
    let df = read(&deploy().join("Dockerfile"));
    // The builder's toolchain and bpf-linker are the ones `cargo xtask setup` uses.
    let manifest = read(&workspace().join("Cargo.toml"));
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version in Cargo.toml")
        .trim_matches('"')
        .to_owned();
    assert!(
        df.contains(&format!("ARG RUST_VERSION={rust_version}")),
        "deploy/Dockerfile's RUST_VERSION is not rust-version {rust_version}"
    );
    let setup = read(&workspace().join("xtask/src/setup.rs"));
    let linker = setup
        .lines()
        .find_map(|l| l.strip_prefix("const BPF_LINKER_VERSION: &str = "))
        .expect("BPF_LINKER_VERSION in xtask/src/setup.rs")
        .trim_end_matches(';')
        .trim_matches('"')
        .to_owned();
    assert!(
        df.contains(&format!("ARG BPF_LINKER_VERSION={linker}")),
        "deploy/Dockerfile's bpf-linker is not {linker}"
    );
    // The image runs the tracer itself, with the configuration where the manifests mount it.
    assert!(
        df.contains("\nENTRYPOINT [\"/usr/local/bin/kraken-tracer\"]\n"),
        "deploy/Dockerfile's ENTRYPOINT is not the tracer"
    );
    assert!(
        df.contains("\nCMD [\"attach\", \"--config\", \"/etc/kraken-tracer/config.toml\"]\n"),
        "deploy/Dockerfile's CMD is not `attach --config /etc/kraken-tracer/config.toml`"
    );
    assert!(
        df.contains("COPY --from=build /usr/local/bin/kraken-tracer /usr/local/bin/kraken-tracer")
    );
    // Nothing copied from the build context but what exists.
    for line in df
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let src = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            src == "." || workspace().join(src).exists(),
            "deploy/Dockerfile copies {src}, which does not exist"
        );
    }
}

/// A local TCP port nothing listens on (it was free a moment ago; a connection to it is refused).
fn unused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

#[test]
fn daemonset_command_follows_kraken_by_name() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: attaching needs root (run through `cargo xtask test`)");
        return;
    }
    // The DaemonSet's container exactly as rendered, run against the binary under test.
    let docs = yaml_documents(&rendered_manifests());
    let ds = find_kind(&docs, "DaemonSet");
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let command = strings_in_order(&c["command"]);
    assert_eq!(
        command[1..],
        ["attach"],
        "TracerProcess runs `kraken-tracer attach`"
    );
    let mut args = strings_in_order(&c["args"]);

    // Its config.toml, changed only where a test machine differs from a node: the collector
    // (a local port nothing listens on: export failures are counted, not fatal).
    let tmp = TempDir::new("daemonset-run");
    let config = read(&deploy().join("kubernetes/config.toml"));
    let endpoint = config
        .lines()
        .find(|l| l.starts_with("otlp-endpoint = "))
        .expect("otlp-endpoint in deploy/kubernetes/config.toml");
    let config = break_text(
        &config,
        endpoint,
        &format!("otlp-endpoint = \"http://127.0.0.1:{}\"", unused_port()),
    );
    let config_file = tmp.write("config.toml", &config);
    let at = args
        .iter()
        .position(|a| a == "--config")
        .expect("--config in args");
    args[at + 1] = config_file.display().to_string();
    // Any free port for the metrics (a flag wins over the file).
    args.extend(["--metrics-addr".to_owned(), "127.0.0.1:0".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // No kraken-agent of ours runs yet: the tracer starts anyway and idles, metrics served.
    // (A Kraken agent of another test running now would be attached too: that is fine.)
    let mut tracer = TracerProcess::spawn(&args).expect("start kraken-tracer");
    let started = "running process(es) attached; checking for new ones every";
    tracer
        .wait_log(started, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let log = tracer.log_text();
    let line = log
        .lines()
        .find(|l| l.contains(started))
        .expect("the line just waited for");
    let following = KRAKEN_EXECUTABLES
        .iter()
        .map(|n| format!("name {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert!(
        line.contains(&format!("following {following}: ")),
        "not following the five components by name: {line}"
    );
    assert!(tracer.running(), "the tracer exited while idle:\n{log}");
    let metrics = procstat::metrics_addr(&mut tracer).unwrap_or_else(|e| panic!("{e}"));
    let scraped =
        procstat::scrape(metrics, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        scraped.contains_key("kraken_tracer_processes_attached"),
        "metrics while idle: {scraped:?}"
    );

    // A Go HTTP server whose executable is named like Kraken's agent in its image starts: the
    // tracer finds it by name and attaches it, without restarting.
    let agent = tmp.0.join("kraken-agent");
    fs::copy(fixture("httpserver", false), &agent).expect("copy fixture");
    let fx = Fixture::http(&agent).expect("start kraken-agent");
    tracer
        .wait_log(
            &format!("following name kraken-agent: attached new pid {}\n", fx.pid),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let log = tracer.log_text();
    assert!(
        log.contains(&format!(
            "attached pid {} as service \"kraken-agent\"",
            fx.pid
        )),
        "{log}"
    );
    assert_eq!(
        log.matches(started).count(),
        1,
        "the tracer started over:\n{log}"
    );
    let attached = wait_until(Duration::from_secs(10), || {
        procstat::scrape(metrics, Duration::from_secs(10))
            .is_ok_and(|m| procstat::get(&m, "kraken_tracer_processes_attached") >= 1.0)
    });
    assert!(attached, "kraken_tracer_processes_attached stayed 0");

    // SIGTERM, as the kubelet sends it: the tracer flushes and exits cleanly.
    let (status, log) = tracer.stop().expect("stop kraken-tracer");
    assert!(status.success(), "kraken-tracer exited {status}:\n{log}");
    assert!(log.contains("SIGTERM: stopping"), "{log}");
}
