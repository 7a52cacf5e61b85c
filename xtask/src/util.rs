use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map_or(here.clone(), PathBuf::from)
}

/// Runs a command, inheriting stdio, failing with the command line on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Runs a command and returns its trimmed stdout, failing on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// True when the command runs and exits 0 (its output is discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cargo build --release -p tracer-user`: the kraken-tracer binary with its eBPF object.
pub fn build_release_tracer() -> Result<()> {
    step("build: kraken-tracer (release)");
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "tracer-user",
    ]))
}

/// Installs the Debian packages `missing` (none: says `what` is present). With `check`, fails
/// instead of installing. `apt-get update` runs only if the first install attempt fails.
pub fn apt_install(what: &str, missing: &[&str], check: bool) -> Result<()> {
    if missing.is_empty() {
        step(&format!("{what}: present"));
        return Ok(());
    }
    if check {
        bail!("missing piece: Debian packages {missing:?} (run `cargo xtask setup`)");
    }
    let install = || {
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "-y", "install", "--no-install-recommends"])
            .args(missing))
    };
    if install().is_err() {
        step(&format!(
            "{what}: apt-get install failed; running apt-get update once and retrying"
        ));
        run(Command::new("apt-get").args(["-q", "update"]))?;
        install().with_context(|| format!("missing piece: apt-get install {missing:?}"))?;
    }
    step(&format!("{what}: installed Debian packages {missing:?}"));
    Ok(())
}

pub fn step(msg: &str) {
    eprintln!("xtask: {msg}");
}

/// Test counts summed over every `test result:` line of cargo test.
#[derive(Default, Clone, Copy)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

/// Runs `cargo test …`, echoing its output, and adds its `test result:` counts to `tally`.
pub fn run_tests(cmd: &mut Command, tally: &mut Tally) -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    let out = child.stdout.take().context("test stdout")?;
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|p| p.trim().strip_suffix(word).map(str::trim))
                    .and_then(|n| n.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()))
                    .unwrap_or(0)
            };
            tally.passed += count("passed");
            tally.failed += count("failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
