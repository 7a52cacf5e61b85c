#[derive(clap::Args)]
pub struct Options {}
pub fn main(_: &Options) -> anyhow::Result<()> { Ok(()) }
