//! Configuration layering: CLI > environment > config file (TOML) > defaults, and the
//! effective configuration `kraken-tracer config --print` shows.
//!
//! The file's keys are the long flag names of `attach` (`otlp-endpoint = "http://jaeger:4317"`,
//! `sample = ["/health=0"]`, `keep-errors = true`). Its entries are turned into `--key=value`
//! tokens for the flags that neither the command line nor the environment set, and the command
//! line is parsed again, so clap's own value parsers validate the file too.

use std::{
    any::TypeId,
    collections::BTreeSet,
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
};

use clap::{
    Arg, ArgAction, ArgMatches, CommandFactory as _, FromArgMatches as _,
    error::{ContextKind, ContextValue},
    parser::ValueSource,
};

use crate::config::{Cli, Command, ConfigArgs};

/// The subcommands that take `AttachArgs` (and so `--config`).
const LAYERED: [&str; 2] = ["attach", "config"];
/// Flags that are not configuration: they cannot appear in a config file.
const NOT_IN_FILE: [&str; 2] = ["config", "print"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// clap's own outcome (usage error, --help, --version): `exit()` it as clap would.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("config file {}: unknown key {key:?} (known keys: {known})", path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("config file {}: {key}: {message}", path.display())]
    Value {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Parses the command line (`argv[0]` is the program name) with the config file, if `--config`
/// or `KRAKEN_TRACER_CONFIG` names one, layered under the CLI and the environment.
pub fn parse_cli(argv: impl IntoIterator<Item = impl Into<OsString>>) -> Result<Cli, ConfigError> {
    parse_with(Cli::command(), argv)
}

/// `parse_cli` with a given clap command (tests pass one without environment fallbacks).
fn parse_with(
    mut cmd: clap::Command,
    argv: impl IntoIterator<Item = impl Into<OsString>>,
) -> Result<Cli, ConfigError> {
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    cmd.build();
    let matches = cmd.try_get_matches_from_mut(&argv)?;
    let Some((name, sub)) = matches
        .subcommand()
        .filter(|(name, _)| LAYERED.contains(name))
    else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let name = name.to_owned();
    let Some(sub_cmd) = cmd.find_subcommand(&name).cloned() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let mut injected = BTreeSet::new();
    let mut matches = matches.clone();
    let config = sub.get_one::<PathBuf>("config").cloned();
    if let Some(path) = &config {
        let tokens = file_tokens(path, &sub_cmd, sub, &mut injected)?;
        if !tokens.is_empty() {
            // Cli has no global options: the subcommand name is the first argument.
            let at = argv
                .iter()
                .skip(1)
                .position(|a| *a == *name)
                .map_or(1, |i| i + 2);
            let mut layered = argv[..at.min(argv.len())].to_vec();
            layered.extend(tokens);
            layered.extend(argv.iter().skip(at).cloned());
            matches = cmd
                .try_get_matches_from_mut(&layered)
                .map_err(|e| file_error(e, path))?;
        }
    }
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Command::Config(args), Some((_, sub))) = (&mut cli.command, matches.subcommand()) {
        args.effective = EffectiveConfig::new(&sub_cmd, sub, &injected, config);
    }
    Ok(cli)
}

/// The flags a config file may set, in declaration order.
fn file_args(cmd: &clap::Command) -> impl Iterator<Item = (&Arg, &str)> {
    cmd.get_arguments().filter_map(|arg| {
        let long = arg.get_long()?;
        let meta = matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        );
        (!meta && !NOT_IN_FILE.contains(&long)).then_some((arg, long))
    })
}

/// Reads the file and turns its entries into `--key=value` tokens for the flags the command
/// line and environment left unset; records those flags' ids in `injected`.
fn file_tokens(
    path: &Path,
    cmd: &clap::Command,
    matches: &ArgMatches,
    injected: &mut BTreeSet<String>,
) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e.span().map(|s| {
            let before = &text[..s.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        });
        ConfigError::Syntax {
            path: path.to_owned(),
            message: format!("{}{}", at.unwrap_or_default(), e.message().trim()),
        }
    })?;
    let mut tokens = Vec::new();
    for (key, value) in &table {
        let Some((arg, _)) = file_args(cmd).find(|(_, long)| long == key) else {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key: key.clone(),
                known: file_args(cmd)
                    .map(|(_, long)| long)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let value_error = |message: String| ConfigError::Value {
            path: path.to_owned(),
            key: key.clone(),
            message,
        };
        let values = arg_tokens(arg, value).map_err(value_error)?;
        let id = arg.get_id().as_str();
        if matches!(
            matches.value_source(id),
            None | Some(ValueSource::DefaultValue)
        ) {
            injected.insert(id.to_owned());
            tokens.extend(values.into_iter().map(|v| match v {
                Some(v) => OsString::from(format!("--{key}={v}")),
                None => OsString::from(format!("--{key}")),
            }));
        }
    }
    Ok(tokens)
}

/// One TOML value as flag occurrences: `Some(value)` for `--key=value`, `None` for a bare flag.
fn arg_tokens(arg: &Arg, value: &toml::Value) -> Result<Vec<Option<String>>, String> {
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match value {
            toml::Value::Boolean(true) => Ok(vec![None]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            other => Err(format!(
                "expected true or false, got {} {other}",
                other.type_str()
            )),
        };
    }
    match value {
        toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
            items.iter().map(|v| scalar(v).map(Some)).collect()
        }
        toml::Value::Array(_) => Err("expected a single value, not a list".into()),
        v => Ok(vec![Some(scalar(v)?)]),
    }
}

fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        other => Err(format!(
            "expected a string, number or list, got {} {other}",
            other.type_str()
        )),
    }
}

/// Rewrites clap's error about an injected `--key=value` token to name the file and the key.
fn file_error(e: clap::Error, path: &Path) -> ConfigError {
    let text = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(s)) => s.first().cloned(),
        _ => None,
    };
    let key = text(ContextKind::InvalidArg).and_then(|a| {
        let a = a.strip_prefix("--")?;
        Some(a.split([' ', '=']).next().unwrap_or(a).to_owned())
    });
    let value = text(ContextKind::InvalidValue);
    let cause = std::error::Error::source(&e).map(ToString::to_string);
    let message = match (&value, cause) {
        (Some(v), Some(c)) if c.contains(v.as_str()) => c,
        (Some(v), Some(c)) => format!("invalid value {v:?}: {c}"),
        (_, None) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_owned()
        }
        (None, Some(c)) => c,
    };
    match key {
        Some(key) => ConfigError::Value {
            path: path.to_owned(),
            key,
            message,
        },
        None => ConfigError::Syntax {
            path: path.to_owned(),
            message,
        },
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Cli,
    Env(String),
    File,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Cli => f.write_str("cli"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File => f.write_str("file"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One flag's effective value (`None`: not set).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: Option<toml::Value>,
    pub source: Source,
}

/// The effective configuration; `Display` renders it as a config file with each value's source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EffectiveConfig {
    /// The config file and where its name came from.
    pub file: Option<(PathBuf, Source)>,
    pub entries: Vec<Entry>,
}

impl EffectiveConfig {
    fn new(
        cmd: &clap::Command,
        matches: &ArgMatches,
        injected: &BTreeSet<String>,
        file: Option<PathBuf>,
    ) -> EffectiveConfig {
        let source = |arg: &Arg| {
            let id = arg.get_id().as_str();
            if injected.contains(id) {
                return Source::File;
            }
            match matches.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Cli,
                Some(ValueSource::EnvVariable) => Source::Env(
                    arg.get_env()
                        .map(|e| e.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                _ => Source::Default,
            }
        };
        let file = file.and_then(|path| {
            let arg = cmd.get_arguments().find(|a| a.get_id() == "config")?;
            Some((path, source(arg)))
        });
        let entries = file_args(cmd)
            .map(|(arg, key)| Entry {
                key: key.to_owned(),
                value: value_of(arg, matches),
                source: source(arg),
            })
            .collect();
        EffectiveConfig { file, entries }
    }
}

/// The value of one flag as the config file would spell it.
fn value_of(arg: &Arg, matches: &ArgMatches) -> Option<toml::Value> {
    let id = arg.get_id().as_str();
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return Some(toml::Value::Boolean(matches.get_flag(id)));
    }
    let raw: Vec<String> = matches
        .get_raw(id)
        .into_iter()
        .flatten()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let ty = arg.get_value_parser().type_id();
    let typed = |s: &str| {
        let is = |t: TypeId| ty == t;
        let int = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
        ];
        if int.into_iter().any(is)
            && let Ok(i) = s.trim().parse::<i64>()
        {
            return toml::Value::Integer(i);
        }
        if (is(TypeId::of::<f64>()) || is(TypeId::of::<f32>()))
            && let Ok(f) = s.trim().parse::<f64>()
            && f.is_finite()
        {
            return toml::Value::Float(f);
        }
        toml::Value::String(s.to_owned())
    };
    if matches!(arg.get_action(), ArgAction::Append) {
        Some(toml::Value::Array(raw.iter().map(|s| typed(s)).collect()))
    } else {
        raw.last().map(|s| typed(s))
    }
}

impl fmt::Display for EffectiveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "# kraken-tracer effective configuration (precedence: cli > env > file > default)"
        )?;
        match &self.file {
            Some((path, source)) => writeln!(f, "# config file: {}  ({source})", path.display())?,
            None => writeln!(f, "# config file: none")?,
        }
        for e in &self.entries {
            match &e.value {
                Some(v) => writeln!(f, "{} = {v}  # {}", e.key, e.source)?,
                None => writeln!(f, "# {} is not set  # {}", e.key, e.source)?,
            }
        }
        Ok(())
    }
}

impl ConfigArgs {
    /// What `kraken-tracer config` prints.
    pub fn output(&self) -> String {
        if self.print {
            self.effective.to_string()
        } else {
            "Use `kraken-tracer config --print [ATTACH FLAGS...]` to print the effective \
             configuration (CLI > env > config file > defaults) as a config file.\n"
                .to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AttachArgs;

    /// The real command without environment fallbacks, so tests don't see the caller's env.
    fn hermetic() -> clap::Command {
        LAYERED.into_iter().fold(Cli::command(), |cmd, name| {
            cmd.mut_subcommand(name, |s| s.mut_args(|a| a.env(None)))
        })
    }

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "kraken-tracer-config-{}-{name}.toml",
                std::process::id()
            ));
            std::fs::write(&path, text).expect("write temp config");
            TempFile(path)
        }

        fn arg(&self) -> String {
            format!("--config={}", self.0.display())
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn parse(args: &[&str]) -> Result<Cli, ConfigError> {
        parse_with(
            hermetic(),
            std::iter::once("kraken-tracer").chain(args.iter().copied()),
        )
    }

    fn attach(args: &[&str]) -> AttachArgs {
        let mut argv = vec!["attach"];
        argv.extend_from_slice(args);
        match parse(&argv).expect("parse").command {
            Command::Attach(a) => a,
            other => panic!("not attach: {other:?}"),
        }
    }

    fn config(args: &[&str]) -> EffectiveConfig {
        let mut argv = vec!["config", "--print"];
        argv.extend_from_slice(args);
        match parse(&argv).expect("parse").command {
            Command::Config(c) => c.effective,
            other => panic!("not config: {other:?}"),
        }
    }

    fn entry<'a>(c: &'a EffectiveConfig, key: &str) -> &'a Entry {
        c.entries
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("no {key} in {c:?}"))
    }

    #[test]
    fn config_file_value_used_when_cli_absent() {
        let f = TempFile::new(
            "used",
            "otlp-endpoint = \"http://jaeger:4317\"\nsample-ratio = 0.2\n\
             keep-slower-than = \"500ms\"\n",
        );
        let a = attach(&[&f.arg(), "--pid", "1"]);
        assert_eq!(a.otlp_endpoint.as_deref(), Some("http://jaeger:4317"));
        assert_eq!(a.sample_ratio, 0.2);
        assert_eq!(
            a.keep_slower_than,
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(a.pids, vec![1]);
        // Defaults stay where the file says nothing.
        assert_eq!(a.otlp_protocol, "grpc");
    }

    #[test]
    fn config_cli_wins_over_file() {
        let f = TempFile::new(
            "wins",
            "sample-ratio = 0.2\npid = [7]\nservice-name = \"file\"\n",
        );
        let a = attach(&[
            "--sample-ratio",
            "0.5",
            &f.arg(),
            "--pid=9",
            "--service-name",
            "cli",
        ]);
        assert_eq!(a.sample_ratio, 0.5);
        assert_eq!(a.pids, vec![9]);
        assert_eq!(a.service_name.as_deref(), Some("cli"));
        let c = config(&[&f.arg(), "--sample-ratio=0.5"]);
        assert_eq!(entry(&c, "sample-ratio").source, Source::Cli);
        assert_eq!(entry(&c, "pid").source, Source::File);
        assert_eq!(entry(&c, "otlp-protocol").source, Source::Default);
        assert_eq!(c.file.as_ref().map(|f| &f.1), Some(&Source::Cli));
    }

    #[test]
    fn config_unknown_key() {
        let f = TempFile::new("unknown", "pid = [1]\nsampel-ratio = 0.2\n");
        let e = parse(&["attach", &f.arg()]).expect_err("unknown key");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "config file {}: unknown key \"sampel-ratio\" (known keys: pid, ",
                f.0.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("sample-ratio"), "{msg}");
        assert!(!msg.contains("print") && !msg.contains("help"), "{msg}");
        let f = TempFile::new("nested", "config = \"/etc/other.toml\"\n");
        let e = parse(&["config", &f.arg()]).expect_err("config in config");
        assert!(e.to_string().contains("unknown key \"config\""), "{e}");
    }

    #[test]
    fn config_bad_value_names_file_key() {
        let f = TempFile::new("bad-ratio", "sample-ratio = 2\n");
        let e = parse(&["attach", &f.arg()]).expect_err("bad ratio");
        assert_eq!(
            e.to_string(),
            format!(
                "config file {}: sample-ratio: 2 is outside 0.0–1.0",
                f.0.display()
            )
        );
        let f = TempFile::new("bad-pid", "pid = [1, \"x\"]\n");
        let e = parse(&["attach", &f.arg()]).expect_err("bad pid");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("config file {}: pid: ", f.0.display())),
            "{msg}"
        );
        assert!(msg.contains("\"x\"") && !msg.contains('\n'), "{msg}");
        let f = TempFile::new("bad-dur", "keep-slower-than = \"5h\"\n");
        let e = parse(&["attach", &f.arg()]).expect_err("bad duration");
        assert!(e.to_string().contains(": keep-slower-than: "), "{e}");
        let f = TempFile::new("bad-syntax", "pid = [1\n");
        let e = parse(&["attach", &f.arg()]).expect_err("syntax");
        assert!(e.to_string().contains("line "), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        let e = parse(&["attach", "--config", "/nonexistent/kraken.toml"]).expect_err("missing");
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("config file /nonexistent/kraken.toml: "),
            "{e}"
        );
        // A bad CLI value is clap's own error, as without a file.
        let f = TempFile::new("fine", "sample-ratio = 0.3\n");
        let e = parse(&["attach", &f.arg(), "--sample-ratio", "3"]).expect_err("bad cli");
        assert!(matches!(e, ConfigError::Clap(_)), "{e:?}");
    }

    #[test]
    fn config_lists_and_bools() {
        let f = TempFile::new(
            "lists",
            "pid = [123, 456]\nsample = [\"/health=0\", \"/announce/**=0.05\"]\n\
             keep-errors = true\nstdout = false\nno-default-rules = true\n\
             exclude-path = \"/metrics\"\nservice-name-for = [\"123=origin\"]\n",
        );
        let a = attach(&[&f.arg()]);
        assert_eq!(a.pids, vec![123, 456]);
        assert_eq!(a.sample.len(), 2);
        assert!(a.keep_errors && a.no_default_rules && !a.stdout);
        assert_eq!(a.exclude_path.len(), 1);
        assert_eq!(a.service_name_for, vec![(123, "origin".to_owned())]);
        // `false` in the file does not undo a CLI flag; CLI lists replace file lists.
        let f = TempFile::new("bools", "stdout = false\npid = [1, 2]\n");
        let a = attach(&[&f.arg(), "--stdout", "--pid", "3,4"]);
        assert!(a.stdout);
        assert_eq!(a.pids, vec![3, 4]);
        let f = TempFile::new("bad-bool", "stdout = \"yes\"\n");
        let e = parse(&["attach", &f.arg()]).expect_err("bad bool");
        assert!(
            e.to_string().contains(": stdout: expected true or false"),
            "{e}"
        );
        let f = TempFile::new("bad-list", "sample-ratio = [0.1]\n");
        let e = parse(&["attach", &f.arg()]).expect_err("list for scalar");
        assert!(
            e.to_string()
                .contains(": sample-ratio: expected a single value"),
            "{e}"
        );
    }

    #[test]
    fn config_print_round_trips() {
        let f = TempFile::new(
            "print-in",
            "pid = [123, 456]\nsample = [\"/health=0\", \"/announce/**=0.05\"]\n\
             keep-errors = true\nkeep-slower-than = \"500ms\"\nsample-ratio = 0.25\n",
        );
        let printed = config(&[
            &f.arg(),
            "--otlp-endpoint",
            "http://jaeger:4317",
            "--service-name-for=1=origin",
            "--drain-interval=20ms",
            "--sample-ratio=0.10",
        ]);
        let text = printed.to_string();
        for line in [
            "pid = [123, 456]  # file",
            "sample = [\"/health=0\", \"/announce/**=0.05\"]  # file",
            "keep-errors = true  # file",
            "stdout = false  # default",
            "otlp-endpoint = \"http://jaeger:4317\"  # cli",
            "otlp-protocol = \"grpc\"  # default",
            "sample-ratio = 0.1  # cli",
            "keep-buffer-spans = 8192  # default",
            "include-path = []  # default",
            "# service-name is not set  # default",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        let saved = TempFile::new("print-out", &text);
        let loaded = config(&[&saved.arg()]);
        assert_eq!(loaded.entries.len(), printed.entries.len());
        for (a, b) in printed.entries.iter().zip(&loaded.entries) {
            assert_eq!((&a.key, &a.value), (&b.key, &b.value));
        }
        // Loaded again with `attach`, the same arguments come out.
        let direct = attach(&[
            &f.arg(),
            "--otlp-endpoint",
            "http://jaeger:4317",
            "--service-name-for=1=origin",
            "--drain-interval=20ms",
            "--sample-ratio=0.10",
        ]);
        let via_file = attach(&[&saved.arg()]);
        assert_eq!(
            format!(
                "{:?}",
                AttachArgs {
                    config: None,
                    ..direct
                }
            ),
            format!(
                "{:?}",
                AttachArgs {
                    config: None,
                    ..via_file
                }
            )
        );
    }

    #[test]
    fn config_without_print_hints() {
        let Command::Config(c) = parse(&["config"]).expect("parse").command else {
            panic!("not config")
        };
        assert!(c.output().contains("config --print"));
        assert!(c.effective.file.is_none());
    }

    #[test]
    fn config_other_subcommands_untouched() {
        let cli = parse(&["inspect", "/bin/true"]).expect("parse");
        assert!(matches!(cli.command, Command::Inspect(_)));
        let e = parse(&["--version"]).expect_err("version");
        assert!(matches!(e, ConfigError::Clap(_)));
    }
}
