//! Installs the validators of `deploy/` (see `deploy_tools.rs`) for
//! `tests/tests/deploy_manifests.rs`, into the project's cache folder, idempotently:
//! kubernetes-validate in a Python virtual environment (PyPI), kustomize and compose-go's
//! validator built with `go install` (Go module proxy), and systemd-analyze (Debian).

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

#[path = "deploy_tools.rs"]
pub mod tools;

use crate::util::{apt_install, output, run, step, succeeds};

pub fn install(check: bool) -> Result<()> {
    let missing: Vec<&str> = tools::APT_PACKAGES
        .iter()
        .filter(|(file, _)| !Path::new(file).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    apt_install("deploy validators (Debian)", &missing, check)?;
    kubernetes_validate(check)?;
    go_tool(
        "kustomize",
        &format!("{}@{}", tools::KUSTOMIZE_MODULE, tools::KUSTOMIZE_VERSION),
        "kustomize",
        &tools::kustomize(),
        &["version"],
        check,
    )?;
    go_tool(
        "compose-go validator",
        &format!(
            "{}@{}",
            tools::COMPOSE_GO_PACKAGE,
            tools::COMPOSE_GO_VERSION
        ),
        "cmd",
        &tools::compose_spec(),
        &["--help"],
        check,
    )
}

fn kubernetes_validate(check: bool) -> Result<()> {
    let bin = tools::kubernetes_validate();
    let want = tools::KUBERNETES_VALIDATE_VERSION;
    // The tests also use the venv's PyYAML (a dependency of kubernetes-validate) to read YAML.
    let has_yaml = || succeeds(Command::new(tools::venv_python()).args(["-c", "import yaml"]));
    if output(Command::new(&bin).arg("--version")).is_ok_and(|v| v == want) && has_yaml() {
        step(&format!("kubernetes-validate: {want} at {}", bin.display()));
        return Ok(());
    }
    if check {
        bail!("missing piece: kubernetes-validate {want} (run `cargo xtask setup`)");
    }
    let venv = tools::venv();
    // A venv whose interpreter went away (or a half-made one) is made again.
    if venv.exists() {
        fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    let make_venv = || succeeds(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    if !make_venv() {
        // Debian's python3 has no venv module until python3-venv is installed.
        let _ = fs::remove_dir_all(&venv);
        apt_install("python3-venv", &["python3-venv"], false)?;
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("missing piece: cannot create a Python virtual environment")?;
    }
    step(&format!(
        "kubernetes-validate: installing {want} from PyPI into {}",
        venv.display()
    ));
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("kubernetes-validate=={want}")))
    .context("missing piece: pip install kubernetes-validate")?;
    let v = output(Command::new(&bin).arg("--version"))
        .context("kubernetes-validate was installed but does not run")?;
    if v != want || !has_yaml() {
        bail!(
            "{} reports version {v:?} (expected {want}), PyYAML importable: {}",
            bin.display(),
            has_yaml()
        );
    }
    step(&format!("kubernetes-validate: installed {v}"));
    Ok(())
}

/// `go install PACKAGE@VERSION` into a scratch GOBIN, then the binary (named `built`) moves to
/// `dest`, whose name carries the version; skipped when `dest` already runs with `probe`.
fn go_tool(
    what: &str,
    package_at_version: &str,
    built: &str,
    dest: &Path,
    probe: &[&str],
    check: bool,
) -> Result<()> {
    if succeeds(Command::new(dest).args(probe)) {
        step(&format!(
            "{what}: {package_at_version} at {}",
            dest.display()
        ));
        return Ok(());
    }
    if check {
        bail!("missing piece: {what} ({package_at_version}; run `cargo xtask setup`)");
    }
    let parent = dest.parent().context("tool path has no parent")?;
    let gobin = parent.join(format!(".gobin-{what}").replace(' ', "-"));
    let _ = fs::remove_dir_all(&gobin);
    fs::create_dir_all(&gobin).with_context(|| format!("creating {}", gobin.display()))?;
    step(&format!(
        "{what}: go install {package_at_version} (Go module proxy)"
    ));
    run(Command::new("go")
        .env("GOBIN", &gobin)
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .args(["install", "-trimpath", package_at_version]))
    .with_context(|| format!("missing piece: go install {package_at_version}"))?;
    fs::rename(gobin.join(built), dest)
        .with_context(|| format!("installing {}", dest.display()))?;
    let _ = fs::remove_dir_all(&gobin);
    if !succeeds(Command::new(dest).args(probe)) {
        bail!("{} was installed but does not run", dest.display());
    }
    step(&format!("{what}: installed at {}", dest.display()));
    Ok(())
}
