//! `kraken-tracer`: see `kraken-tracer --help` and the README.

use std::process::ExitCode;

use kraken_tracer::{
    config::Command,
    config_file::{self, ConfigError},
    features::Features,
    inspect, session, socket,
};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = match config_file::parse_cli(std::env::args_os()) {
        Ok(cli) => cli,
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("kraken-tracer: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = match cli.command {
        Command::Features => {
            let features = Features::detect();
            println!("{features}");
            println!(
                "{}",
                socket::feature_line(&socket::Support::detect(&features))
            );
            Ok(())
        }
        Command::Inspect(a) => inspect::run(&a.target).map_err(Into::into),
        Command::Config(c) => {
            print!("{}", c.output());
            Ok(())
        }
        Command::Attach(a) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(session::run(a)).map_err(Into::into)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kraken-tracer: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the message already holds
/// (our thiserror messages usually include their source).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !line.contains(&c) {
            line.push_str(": ");
            line.push_str(&c);
        }
    }
    line.replace('\n', " ")
}
