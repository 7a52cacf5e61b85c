//! The validators of `deploy/` (manifests, compose file, systemd unit): their pinned versions and
//! where `cargo xtask setup` installs them. Shared by `xtask/src/deploy.rs` (installs) and
//! `tests/tests/deploy_manifests.rs` (runs them), which both include this file next to `cache.rs`.

use std::path::PathBuf;

use crate::cache::tool_path;

/// PyPI `kubernetes-validate`: Kubernetes' JSON schemas (1.25 to 1.37) bundled, checks offline.
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
/// Go module of kustomize (what `kubectl apply -k` runs), and its version.
pub const KUSTOMIZE_MODULE: &str = "sigs.k8s.io/kustomize/kustomize/v5";
pub const KUSTOMIZE_VERSION: &str = "v5.8.0";
/// The Compose Specification's reference loader and validator (compose-go, which Docker Compose
/// itself uses): its `cmd` package loads a compose file, checks it against the schema and the
/// model's consistency, and prints the normalised model.
pub const COMPOSE_GO_PACKAGE: &str = "github.com/compose-spec/compose-go/v2/cmd";
pub const COMPOSE_GO_VERSION: &str = "v2.16.2";
/// Debian packages: (a file it installs, package).
pub const APT_PACKAGES: &[(&str, &str)] = &[("/usr/bin/systemd-analyze", "systemd")];

/// The Python virtual environment holding kubernetes-validate (and PyYAML, which it needs).
pub fn venv() -> PathBuf {
    tool_path(
        "KRAKEN_TRACER_DEPLOY_VENV",
        &format!("deploy-venv-{KUBERNETES_VALIDATE_VERSION}"),
    )
}

pub fn kubernetes_validate() -> PathBuf {
    venv().join("bin/kubernetes-validate")
}

pub fn venv_python() -> PathBuf {
    venv().join("bin/python")
}

pub fn kustomize() -> PathBuf {
    tool_path(
        "KRAKEN_TRACER_KUSTOMIZE",
        &format!("bin/kustomize-{KUSTOMIZE_VERSION}"),
    )
}

pub fn compose_spec() -> PathBuf {
    tool_path(
        "KRAKEN_TRACER_COMPOSE_SPEC",
        &format!("bin/compose-spec-{COMPOSE_GO_VERSION}"),
    )
}
