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
        let exe_path = fs::read_link(&exe_link).map_err(|e| io_err(&exe_link, e))?;
        let bytes = fs::read(&exe_link).map_err(|e| io_err(&exe_link, e))?;
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

    /// The configuration the kernel programs read for this process.
    pub fn process_config(&self) -> ProcessConfig {
        let go_version = self
            .binary
            .go_version()
            .map_or(0, |v| v.major * 100 + v.minor);
        ProcessConfig {
            offsets: self.offsets,
            go_version,
            flags: 0,
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
