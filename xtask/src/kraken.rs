//! Uber Kraken for the integration tests, built from the Go module proxy only
//! (tests/kraken/README.md), plus the Debian packages a local Kraken cluster needs.
//!
//! Everything lands in `<cache>/kraken-tracer/kraken-<VERSION>/` (`<cache>` is `$XDG_CACHE_HOME`
//! or `~/.cache`), where `tests/src/kraken.rs` looks for it; it survives `cargo clean`:
//! - `bin/{agent,origin,tracker,build-index,proxy,testfs}`: unstripped, with DWARF (as Kraken's
//!   Makefile builds them);
//! - `bin/{agent,origin}-stripped`: the same built with `-ldflags=-s -w`;
//! - `config/<component>/base.yaml`: Kraken's own base configs, copied from the module;
//! - `INSTALLED`: written last, names the version (an interrupted build is rebuilt).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{apt_install, output, root, run, step, succeeds};

/// The Kraken release (module version of github.com/uber/kraken); shared with tests/src/kraken.rs.
const VERSION: &str = include_str!("../../tests/kraken/VERSION");
const MODULE: &str = "github.com/uber/kraken";
/// Installed name and main package (inside MODULE) of each binary.
const BINARIES: &[(&str, &str)] = &[
    ("agent", "agent"),
    ("origin", "origin"),
    ("tracker", "tracker"),
    ("build-index", "build-index"),
    ("proxy", "proxy"),
    ("testfs", "tools/bin/testfs"),
];
/// Binaries also built stripped (`<name>-stripped`), for tests on production-like binaries.
const STRIPPED: &[&str] = &["agent", "origin"];
/// Components whose `config/<c>/base.yaml` the tests extend.
const CONFIGS: &[&str] = &["agent", "origin", "tracker", "build-index", "proxy"];
/// Debian packages: (package, a file it installs). Kraken execs nginx in front of every
/// component; skopeo is a Docker registry v2 client for push/pull tests.
const APT_PACKAGES: &[(&str, &str)] =
    &[("nginx", "/usr/sbin/nginx"), ("skopeo", "/usr/bin/skopeo")];

pub fn version() -> &'static str {
    VERSION.trim()
}

/// Where the pinned Kraken is installed (see `cache`).
pub fn install_dir() -> PathBuf {
    crate::cache::kraken_dir(version())
}

/// Installs nginx and skopeo, then builds the pinned Kraken unless it is already installed.
pub fn install(check: bool) -> Result<()> {
    apt_packages(check)?;
    let dir = install_dir();
    if is_installed(&dir) {
        step(&format!("kraken: {} at {}", version(), dir.display()));
        return Ok(());
    }
    if check {
        bail!(
            "missing piece: Kraken {} at {} (run `cargo xtask setup`)",
            version(),
            dir.display()
        );
    }
    build(&dir)
}

fn is_installed(dir: &Path) -> bool {
    let marker = fs::read_to_string(dir.join("INSTALLED")).unwrap_or_default();
    marker.split_whitespace().next() == Some(version())
        && BINARIES
            .iter()
            .map(|(name, _)| dir.join("bin").join(name))
            .chain(
                STRIPPED
                    .iter()
                    .map(|name| dir.join("bin").join(format!("{name}-stripped"))),
            )
            .chain(
                CONFIGS
                    .iter()
                    .map(|c| dir.join("config").join(c).join("base.yaml")),
            )
            .all(|p| p.is_file())
}

fn build(dir: &Path) -> Result<()> {
    let src = root().join("tests/kraken");
    if !succeeds(Command::new("sh").args(["-c", "command -v gcc || command -v cc"])) {
        bail!("missing piece: a C compiler (gcc): Kraken needs cgo for sqlite");
    }
    step(&format!(
        "kraken: building {MODULE} {} (agent, origin, tracker, build-index, proxy, testfs) \
         from the Go module proxy (~1.5 min cold on 2 cores)",
        version()
    ));
    let started = Instant::now();
    // Build into a scratch directory next to the final one, then rename: an interrupted build
    // never leaves a half-filled install behind.
    let parent = dir.parent().context("kraken install path")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".kraken-{}.tmp", version()));
    let _ = fs::remove_dir_all(&tmp);
    let bin = tmp.join("bin");
    fs::create_dir_all(&bin)?;
    let go = |args: &[&str]| {
        let mut c = Command::new("go");
        c.current_dir(&src)
            .env("CGO_ENABLED", "1")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=readonly -buildvcs=false")
            .args(args);
        c
    };
    // One `go build` for all six: the packages compile in parallel. No -ldflags and no
    // -trimpath: unstripped, with DWARF and module-cache source paths, like Kraken's Makefile.
    let mut all = go(&["build", "-o"]);
    all.arg(format!("{}/", bin.display()));
    for (_, pkg) in BINARIES {
        all.arg(format!("{MODULE}/{pkg}"));
    }
    run(&mut all).context(
        "missing piece: Kraken could not be built from tests/kraken (see go's output above)",
    )?;
    for (name, pkg) in BINARIES {
        let built = bin.join(pkg.rsplit('/').next().unwrap_or(pkg));
        let want = bin.join(name);
        if built != want {
            fs::rename(&built, &want)?;
        }
    }
    let compiled = started.elapsed();
    for name in STRIPPED {
        let pkg = BINARIES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .context("stripped binary")?;
        let out = bin.join(format!("{name}-stripped"));
        run(go(&["build", "-ldflags=-s -w", "-o"])
            .arg(&out)
            .arg(format!("{MODULE}/{pkg}")))
        .with_context(|| format!("building stripped {name}"))?;
    }
    // Kraken's base configs, from the module the build just used.
    let module_dir = output(&mut go(&["list", "-m", "-f", "{{.Dir}}", MODULE]))?;
    for c in CONFIGS {
        let from = Path::new(&module_dir)
            .join("config")
            .join(c)
            .join("base.yaml");
        let to = tmp.join("config").join(c);
        fs::create_dir_all(&to)?;
        fs::copy(&from, to.join("base.yaml"))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    fs::write(
        tmp.join("INSTALLED"),
        format!(
            "{} built with {} from {module_dir}\n",
            version(),
            output(Command::new("go").arg("version"))?
        ),
    )?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir).with_context(|| format!("installing {}", dir.display()))?;
    let sizes: Vec<String> = fs::read_dir(dir.join("bin"))?
        .filter_map(Result::ok)
        .map(|e| {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            format!("{} {} MiB", e.file_name().to_string_lossy(), size >> 20)
        })
        .collect();
    step(&format!(
        "kraken: built {} in {:.0?} (+{:.0?} for the stripped copies) at {}: {}",
        version(),
        compiled,
        started.elapsed().saturating_sub(compiled),
        dir.display(),
        sizes.join(", ")
    ));
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_packages(check: bool) -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(pkg, file)| !dpkg_installed(pkg) || !Path::new(file).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    apt_install("kraken: nginx and skopeo", &missing, check)?;
    stop_system_nginx(check)
}

/// Debian's nginx package starts nginx as a system service (port 80). Kraken runs nginx
/// processes of its own (pid file /tmp/nginx.pid), so the service is stopped and disabled.
fn stop_system_nginx(check: bool) -> Result<()> {
    let running = fs::read_to_string("/run/nginx.pid")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
    if !running {
        return Ok(());
    }
    if check {
        bail!("the nginx system service is running (run `cargo xtask setup` to stop it)");
    }
    let systemd = Path::new("/run/systemd/system").exists();
    if systemd {
        let _ = succeeds(Command::new("systemctl").args(["disable", "--now", "nginx"]));
    } else {
        let _ = succeeds(Command::new("service").args(["nginx", "stop"]));
        let _ = succeeds(Command::new("update-rc.d").args(["nginx", "disable"]));
    }
    if Path::new("/run/nginx.pid").exists() {
        bail!("could not stop the nginx system service (`service nginx stop`)");
    }
    step("kraken: stopped and disabled the nginx system service");
    Ok(())
}
