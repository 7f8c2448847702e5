//! The `ctsync` command.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use ctnetlink::FlowOp;
use ctsync::load;
use ctsync::synth::Mix;

/// Conntrack replication for high-availability Linux firewalls.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a kernel conntrack table with synthetic entries (root; for tests and
    /// benchmarks). Each operation prints one line of JSON.
    Load {
        /// Work in this network namespace (as `ip netns add` names it) instead of here.
        #[arg(long, global = true)]
        netns: Option<String>,
        #[command(subcommand)]
        op: LoadOp,
    },
}

#[derive(Debug, Subcommand)]
enum LoadOp {
    /// Create entries START..START+COUNT.
    Fill {
        /// How many entries.
        #[arg(long)]
        count: u64,
        /// Index of the first entry.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Which entries.
        #[arg(long, value_enum, default_value_t = Mix::Realistic)]
        mix: Mix,
        /// Their timeout in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u32,
    },
    /// Delete entries START..START+COUNT (as `fill` made them).
    Delete {
        /// How many entries.
        #[arg(long)]
        count: u64,
        /// Index of the first entry.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Which entries.
        #[arg(long, value_enum, default_value_t = Mix::Realistic)]
        mix: Mix,
    },
    /// Create flows at RATE per second, each deleted after LIFETIME, for DURATION.
    Churn {
        /// Flows per second; 0 means as fast as the kernel allows.
        #[arg(long)]
        rate: u64,
        /// How long each flow lives, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        lifetime_ms: u64,
        /// How long to churn, in seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Which entries.
        #[arg(long, value_enum, default_value_t = Mix::Realistic)]
        mix: Mix,
    },
    /// Read the whole table once and report how fast.
    Dump,
    /// Delete every entry.
    Flush,
}

fn run(cli: Cli) -> Result<bool> {
    let Command::Load { netns, op } = cli.command;
    let mut ct = load::open(netns.as_deref())?;
    let ok = match op {
        LoadOp::Fill {
            count,
            start,
            mix,
            timeout,
        } => {
            let r = load::bulk(&mut ct, FlowOp::Create, mix, start, count, timeout)?;
            println!("{}", serde_json::to_string(&r)?);
            !load::had_errors(&r)
        }
        LoadOp::Delete { count, start, mix } => {
            let r = load::bulk(&mut ct, FlowOp::Delete, mix, start, count, 0)?;
            println!("{}", serde_json::to_string(&r)?);
            !load::had_errors(&r)
        }
        LoadOp::Churn {
            rate,
            lifetime_ms,
            seconds,
            mix,
        } => {
            if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
                anyhow::bail!("--seconds must be between 0 and 86400, not {seconds}");
            }
            let r = load::churn(
                &mut ct,
                mix,
                rate,
                Duration::from_millis(lifetime_ms),
                Duration::from_secs_f64(seconds),
                3600,
            )?;
            println!("{}", serde_json::to_string(&r)?);
            true
        }
        LoadOp::Dump => {
            println!("{}", serde_json::to_string(&load::dump(&mut ct)?)?);
            true
        }
        LoadOp::Flush => {
            ct.flush(None)?;
            println!("{}", serde_json::json!({"op": "flush", "ok": true}));
            true
        }
    };
    Ok(ok)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("ctsync: {e:#}");
            ExitCode::FAILURE
        }
    }
}
