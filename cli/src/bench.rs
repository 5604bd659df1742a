//! `sluice bench`: measurements of the embedded runtime.

use clap::Args;

#[derive(Args)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> anyhow::Result<u8> {
    anyhow::bail!("not implemented yet")
}
