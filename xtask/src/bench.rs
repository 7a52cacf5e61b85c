//! `cargo xtask bench`: the side-by-side benchmark (tests/examples/bench.rs) with the release
//! tracer: the Go fixture under fixed-concurrency load with no tracer, kraken-tracer at 10 % and
//! 100 %, the OpenTelemetry Go auto-instrumentation (built here from the Go module proxy, its
//! eBPF objects generated with Debian's clang and bpf2go) and a re-creation of its probe set;
//! probe cost per site kind; real Kraken with vs without the tracer. Writes results.json,
//! bench-*.png and BENCHMARKS.md into target/bench/; `--publish` copies them to BENCHMARKS.md
//! and docs/bench/ at the repository root.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::util::{root, step};

/// The peer: OpenTelemetry Go auto-instrumentation, pinned.
const OTEL_AUTO_MODULE: &str = "go.opentelemetry.io/auto";
const OTEL_AUTO_VERSION: &str = "v0.24.0";

#[derive(clap::Args)]
pub struct Options {
    /// ~30 s smoke run: 2 short rounds, no Kraken, no peer build.
    #[arg(long)]
    pub quick: bool,
    /// Skip the real Kraken part.
    #[arg(long)]
    pub no_kraken: bool,
    /// Afterwards copy the report to BENCHMARKS.md and docs/bench/ (results.json, plots).
    #[arg(long)]
    pub publish: bool,
}

pub fn main(o: &Options) -> Result<()> {
    let out = root().join(if o.quick {
        "target/bench/quick"
    } else {
        "target/bench"
    });
    fs::create_dir_all(&out)?;
    let mut env: Vec<(String, String)> = vec![
        ("BENCH_OUT".into(), out.display().to_string()),
        ("BENCH_QUICK".into(), if o.quick { "1" } else { "0" }.into()),
        (
            "BENCH_KRAKEN".into(),
            if o.no_kraken { "0" } else { "1" }.into(),
        ),
    ];
    if !o.quick {
        match build_otel_auto(&root().join("target/bench/peer")) {
            Ok(bin) => env.push(("BENCH_OTEL_AUTO_BIN".into(), bin.display().to_string())),
            Err(e) => {
                step(&format!(
                    "bench: the OTel Go auto peer did not build: {e:#}"
                ));
                env.push(("BENCH_OTEL_AUTO_ERROR".into(), format!("{e:#}")));
            }
        }
    }
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    crate::example("bench", &env_ref)?;
    if o.publish {
        publish(&out)?;
    }
    Ok(())
}

/// Copies target/bench's report to the repository: BENCHMARKS.md (image links rewritten to
/// docs/bench/) and docs/bench/{results.json, *.png}.
fn publish(out: &Path) -> Result<()> {
    let docs = root().join("docs/bench");
    fs::create_dir_all(&docs)?;
    for e in fs::read_dir(out)? {
        let p = e?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".png") || name == "results.json" {
            fs::copy(&p, docs.join(&name))?;
        }
    }
    let md = fs::read_to_string(out.join("BENCHMARKS.md"))?
        .replace("](bench-", "](docs/bench/bench-")
        .replace("`results.json`", "`docs/bench/results.json`");
    fs::write(root().join("BENCHMARKS.md"), md)?;
    step("bench: published BENCHMARKS.md and docs/bench/");
    Ok(())
}

/// Runs a command with a time limit (coreutils `timeout`); on failure, the error carries the
/// command and the tail of its output.
fn run_logged(cmd: &mut Command, log: &Path, what: &str) -> Result<()> {
    let f = fs::File::create(log)?;
    let status = cmd
        .stdout(Stdio::from(f.try_clone()?))
        .stderr(Stdio::from(f))
        .status()
        .with_context(|| format!("starting {what}"))?;
    if !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("go: downloading"))
            .rev()
            .take(6)
            .collect();
        bail!(
            "`{what}` failed ({status}): {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(())
}

/// Builds the OTel Go auto-instrumentation CLI from the Go module proxy (cached in `dir`):
/// download the module, generate its eBPF objects with bpf2go + clang (the module ships the
/// generated Go wrappers but not the objects), drop its `./sdk` replace (a directory that is a
/// separate module, not in the zip), `go build ./cli`. Time-boxed.
fn build_otel_auto(dir: &Path) -> Result<PathBuf> {
    let bin = dir.join(format!("otel-go-instrumentation-{OTEL_AUTO_VERSION}"));
    if bin.exists() {
        step(&format!("bench: peer present: {}", bin.display()));
        return Ok(bin);
    }
    step(&format!(
        "bench: building the peer {OTEL_AUTO_MODULE}@{OTEL_AUTO_VERSION} (time-boxed)"
    ));
    for tool in ["clang", "llvm-strip", "go"] {
        if !crate::util::succeeds(
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}")),
        ) {
            bail!("{tool} not found (run `cargo xtask setup`)");
        }
    }
    fs::create_dir_all(dir)?;
    let gopath = dir.join("gopath");
    let go = |args: &[&str], cwd: &Path, limit: &str| {
        let mut c = Command::new("timeout");
        c.arg(limit)
            .arg("go")
            .args(args)
            .current_dir(cwd)
            .env("GOPATH", &gopath)
            .env("GOFLAGS", "-mod=mod");
        c
    };
    let json = crate::util::output(&mut go(
        &[
            "mod",
            "download",
            "-json",
            &format!("{OTEL_AUTO_MODULE}@{OTEL_AUTO_VERSION}"),
        ],
        dir,
        "300",
    ))?;
    let src_dir = json
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"Dir\": \""))
        .and_then(|l| l.strip_suffix("\","))
        .context("go mod download printed no Dir")?;
    let src = dir.join("auto");
    let _ = fs::remove_dir_all(&src);
    crate::util::run(Command::new("cp").arg("-r").arg(src_dir).arg(&src))?;
    crate::util::run(Command::new("chmod").args(["-R", "u+w"]).arg(&src))?;
    let cflags = format!(
        "-I{0}/internal/include/libbpf -I{0}/internal/include",
        src.display()
    );
    let mut gen_cmd = go(
        &["generate", "./internal/pkg/instrumentation/bpf/..."],
        &src,
        "900",
    );
    gen_cmd.env("BPF2GO_CFLAGS", cflags);
    run_logged(
        &mut gen_cmd,
        &dir.join("generate.log"),
        "go generate ./internal/pkg/instrumentation/bpf/... (bpf2go + clang)",
    )?;
    run_logged(
        &mut go(
            &["mod", "edit", "-dropreplace=go.opentelemetry.io/auto/sdk"],
            &src,
            "60",
        ),
        &dir.join("modedit.log"),
        "go mod edit -dropreplace",
    )?;
    let tmp = dir.join("otel-go-instrumentation.tmp");
    run_logged(
        &mut go(
            &["build", "-o", &tmp.display().to_string(), "./cli"],
            &src,
            "900",
        ),
        &dir.join("build.log"),
        "go build ./cli",
    )?;
    fs::rename(&tmp, &bin)?;
    step(&format!("bench: peer built: {}", bin.display()));
    Ok(bin)
}
