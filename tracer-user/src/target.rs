//! A process to trace: its executable, Go version and struct offsets, resolved from its PID.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use tracer_common::offsets::{GoOffsets, ProcessConfig};

use crate::{
    offsets::{self, OffsetSource},
    symbols::{Binary, SymbolError},
};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no such process: pid {pid}")]
    NoSuchProcess { pid: u32 },
    #[error(
        "permission denied reading {path} (need root, or CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)"
    )]
    PermissionDenied { path: PathBuf },
    /// readlink(/proc/PID/exe) refused: a process of another user, or with capabilities the
    /// tracer lacks, needs CAP_SYS_PTRACE (the kernel's ptrace read-access check).
    #[error(
        "permission denied reading {path}: pid {pid} belongs to another user or holds capabilities \
         this tracer lacks (needs CAP_SYS_PTRACE; see docs/capabilities.md)"
    )]
    NoPtraceAccess { pid: u32, path: PathBuf },
    /// The link resolved but the file cannot be opened for reading.
    #[error(
        "permission denied reading the executable of pid {pid} ({exe}) through {path}: not \
         readable by this user (needs CAP_DAC_READ_SEARCH; see docs/capabilities.md)"
    )]
    ExeNotReadable {
        pid: u32,
        path: PathBuf,
        exe: PathBuf,
    },
    #[error(
        "pid {pid} ({exe}): {version} is outside the verified offsets table ({covers}) and the \
         binary has no usable DWARF: not attached, rather than read Go struct fields at guessed \
         offsets (trace a build with DWARF, i.e. not linked with -w, or pass \
         --allow-unverified-offsets to use the nearest table row at the risk of wrong values)"
    )]
    UnverifiedOffsets {
        pid: u32,
        exe: PathBuf,
        version: String,
        covers: &'static str,
    },
    #[error("pid {pid}: cannot read {path}: {source}")]
    Io {
        pid: u32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pid {pid}: {source}")]
    Binary {
        pid: u32,
        #[source]
        source: SymbolError,
    },
    #[error("pid {pid} ({exe}): cannot find Go struct offsets: {source}")]
    Offsets {
        pid: u32,
        exe: PathBuf,
        #[source]
        source: offsets::OffsetsError,
    },
}

/// A resolved target process.
pub struct Target {
    pub pid: u32,
    /// `/proc/PID/exe`: attach through it so containers and deleted files work.
    pub exe_link: PathBuf,
    /// What the link points at (for messages and service.name).
    pub exe_path: PathBuf,
    pub binary: Binary,
    pub offsets: GoOffsets,
    pub offset_source: OffsetSource,
}

impl Target {
    pub fn resolve(pid: u32) -> Result<Target, TargetError> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if pid == 0 || !proc_dir.exists() {
            return Err(TargetError::NoSuchProcess { pid });
        }
        let exe_link = proc_dir.join("exe");
        let io_err = |path: &Path, source: io::Error| match source.kind() {
            io::ErrorKind::PermissionDenied => TargetError::PermissionDenied {
                path: path.to_owned(),
            },
            io::ErrorKind::NotFound => TargetError::NoSuchProcess { pid },
            _ => TargetError::Io {
                pid,
                path: path.to_owned(),
                source,
            },
        };
        // Always read through the link, never the path it shows: in a container (another mount
        // namespace) that path may not exist here, or name another file.
        let exe_path = fs::read_link(&exe_link).map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => TargetError::NoPtraceAccess {
                pid,
                path: exe_link.clone(),
            },
            _ => io_err(&exe_link, e),
        })?;
        // An upgrade that replaced the file leaves "PATH (deleted)": name the path.
        let exe_path = match exe_path.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
            Some(p) => {
                log::info!("pid {pid} runs a file since replaced or deleted: {p}");
                PathBuf::from(p)
            }
            None => exe_path,
        };
        let bytes = fs::read(&exe_link).map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => TargetError::ExeNotReadable {
                pid,
                path: exe_link.clone(),
                exe: exe_path.clone(),
            },
            _ => io_err(&exe_link, e),
        })?;
        let binary = Binary::from_bytes(exe_path.clone(), bytes)
            .map_err(|source| TargetError::Binary { pid, source })?;
        let version = binary.go_version().map(|v| (v.major, v.minor, v.patch));
        let (offsets, offset_source) =
            offsets::resolve(binary.bytes(), version).map_err(|source| TargetError::Offsets {
                pid,
                exe: exe_path.clone(),
                source,
            })?;
        Ok(Target {
            pid,
            exe_link,
            exe_path,
            binary,
            offsets,
            offset_source,
        })
    }

    /// Refuses offsets that were guessed: from the table for a Go version it does not cover
    /// (no usable DWARF). The nearest row can be wrong in any field (go1.26.11 moved
    /// `http.response.status` in a patch release), and a wrong offset reads a wrong value, not
    /// an error; so such a process is not attached unless the user accepts the risk.
    pub fn require_verified_offsets(&self) -> Result<(), TargetError> {
        if offsets_verified(self.offset_source) {
            return Ok(());
        }
        Err(TargetError::UnverifiedOffsets {
            pid: self.pid,
            exe: self.exe_path.clone(),
            version: self
                .binary
                .go_version()
                .map_or_else(|| "an unknown Go version".to_owned(), ToString::to_string),
            covers: offsets::TABLE_COVERS,
        })
    }

    /// The configuration the kernel programs read for this process.
    pub fn process_config(&self) -> ProcessConfig {
        let go_version = self
            .binary
            .go_version()
            .map_or(0, |v| v.major * 100 + v.minor);
        let kraken = crate::kraken::kraken_version(&self.binary).is_some();
        ProcessConfig {
            offsets: self.offsets,
            go_version,
            flags: if kraken {
                tracer_common::offsets::FLAG_KRAKEN
            } else {
                0
            },
        }
    }

    /// The executable's file name, the default `service.name`.
    pub fn exe_name(&self) -> String {
        self.exe_path.file_name().map_or_else(
            || format!("pid-{}", self.pid),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// Whether offsets from `source` are known right: DWARF, or a table row verified for the
/// binary's Go version.
pub fn offsets_verified(source: OffsetSource) -> bool {
    match source {
        OffsetSource::Dwarf => true,
        OffsetSource::Table { covered } => covered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dwarf_and_covered_table_rows_are_verified() {
        assert!(offsets_verified(OffsetSource::Dwarf));
        assert!(offsets_verified(OffsetSource::Table { covered: true }));
        assert!(!offsets_verified(OffsetSource::Table { covered: false }));
        // The decision for versions around the table, as `offsets::resolve` reports them for a
        // binary without DWARF.
        let covered = |minor| offsets::from_table(1, minor, 0).1;
        assert!(!covered(20), "older than the table");
        assert!(covered(21) && covered(26));
        assert!(!covered(27), "newer than the table");
    }

    #[test]
    fn permission_errors_name_the_capability() {
        let e = TargetError::NoPtraceAccess {
            pid: 7,
            path: "/proc/7/exe".into(),
        };
        assert!(e.to_string().contains("CAP_SYS_PTRACE"), "{e}");
        assert!(e.to_string().contains("ermission denied"), "{e}");
        let e = TargetError::ExeNotReadable {
            pid: 7,
            path: "/proc/7/exe".into(),
            exe: "/usr/bin/kraken".into(),
        };
        assert!(e.to_string().contains("CAP_DAC_READ_SEARCH"), "{e}");
    }

    #[test]
    fn no_such_process() {
        assert!(matches!(
            Target::resolve(0),
            Err(TargetError::NoSuchProcess { pid: 0 })
        ));
        assert!(matches!(
            Target::resolve(u32::MAX),
            Err(TargetError::NoSuchProcess { .. })
        ));
    }
}
