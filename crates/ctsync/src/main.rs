//! The `ctsync` command.

// Under cfg(fuzzing) ctsync-wire stubs the AEAD (crypto.rs: `seal` appends a zero tag,
// `open` accepts any), so that the fuzzers reach the decoders behind it. A daemon built
// that way would believe forged datagrams. The fuzz crate links only the ctsync library
// (fuzz/Cargo.toml), never this binary, and a normal build never sets cfg(fuzzing): this
// binary must not build at all with it (docs/SECURITY.md).
#[cfg(fuzzing)]
compile_error!("the ctsync binary must never be built with cfg(fuzzing): its AEAD is stubbed");

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use ctnetlink::FlowOp;
use ctsync_core::Role;
use ctsync_lab::load;
use ctsync_lab::synth::Mix;

mod generate;

/// Conntrack replication for high-availability Linux firewalls.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground (root).
    Run {
        /// The configuration file.
        #[arg(long, short)]
        config: std::path::PathBuf,
    },
    /// Build a throwaway firewall cluster in network namespaces (root), run sessions
    /// through it, fail the primary hard (with --nodes 3, then the next one too), and
    /// show what happened; then the same without ctsync. With --routers N, two hosts of
    /// N Neutron routers instead: one router fails over, then a host. Removes everything
    /// it built, also on Ctrl-C.
    Demo {
        /// Firewalls in the cluster: 2 or 3.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=3))]
        nodes: u8,
        /// Build a Neutron network node's shape instead: this many routers (1 to 64),
        /// each with a replica on two hosts, one ctsync per host; one router fails over,
        /// then a whole host.
        #[arg(long, conflicts_with = "nodes", value_parser = clap::value_parser!(u8).range(1..=64))]
        routers: Option<u8>,
        /// TCP connections [default: 20; with --routers, 2 each way per router].
        #[arg(long)]
        tcp: Option<usize>,
        /// UDP flows [default: 10; with --routers, 1 each way per router].
        #[arg(long)]
        udp: Option<usize>,
        /// Skip the run without ctsync.
        #[arg(long)]
        no_control: bool,
    },
    /// One failover run of the side-by-side benchmark (`bench/sessions.sh`): the demo's
    /// lab with the given sync daemon, printing one JSON line.
    #[command(hide = true)]
    BenchSessions {
        /// The sync daemon.
        #[arg(long, value_enum)]
        daemon: ctsync_lab::bench::BenchDaemon,
        /// VRRP advertisement interval, milliseconds.
        #[arg(long, default_value_t = 1000)]
        advert_ms: u32,
        /// TCP connections.
        #[arg(long, default_value_t = 50)]
        tcp: usize,
        /// UDP flows.
        #[arg(long, default_value_t = 0)]
        udp: usize,
        /// Further entries in the primary's table, replicated before the failure.
        #[arg(long, default_value_t = 0)]
        background: u64,
    },
    /// Print a new random cluster key (`ctsync keygen > /etc/ctsync/cluster.key`).
    Keygen,
    /// Write the man pages or the shell completions into DIR (for packaging).
    #[command(hide = true)]
    Generate {
        /// man or completions.
        #[arg(value_enum)]
        what: generate::What,
        /// The directory to write into (created if missing).
        dir: std::path::PathBuf,
    },
    /// Show the daemon's state: role, readiness, peers, caches, drops.
    Status {
        #[command(flatten)]
        at: Socket,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set the role: what a keepalived notify script calls.
    Role {
        /// The role to take, in any case.
        #[arg(value_parser = role_parser(), ignore_case = true)]
        role: Role,
        #[command(flatten)]
        at: Socket,
    },
    /// Write every flow the peers replicated to this node's kernel.
    Commit {
        #[command(flatten)]
        at: Socket,
    },
    /// Forget a cache: internal (re-read from the kernel at once), external (asked from
    /// the peers again) or both.
    Flush {
        /// internal, external or all.
        #[arg(value_parser = ["internal", "external", "all"], default_value = "all")]
        which: String,
        #[command(flatten)]
        at: Socket,
    },
    /// Re-read the internal cache from the kernel table.
    Resync {
        #[command(flatten)]
        at: Socket,
    },
    /// Ask the peers for their whole tables.
    RequestResync {
        #[command(flatten)]
        at: Socket,
    },
    /// Send this node's whole table to the peers.
    Bulk {
        #[command(flatten)]
        at: Socket,
    },
    /// List the flows of a cache: internal (this node's) or external (the peers').
    Dump {
        /// internal or external.
        #[arg(value_parser = ["internal", "external"])]
        which: String,
        /// One JSON object per flow.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: Socket,
    },
    /// Print a ctsync configuration (commented TOML) made from a conntrackd.conf; what
    /// does not map is listed at its end with its line numbers (docs/MIGRATION.md).
    Import {
        /// The conntrackd.conf.
        file: std::path::PathBuf,
    },
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

/// `ctsync role`'s argument: the core's [`Role`] by its name, the names listed in
/// `--help` and in the error for any other word; keepalived's `MASTER` is taken for
/// primary (as the control socket does), so a notify script can pass its state.
fn role_parser() -> impl clap::builder::TypedValueParser<Value = Role> {
    use clap::builder::{PossibleValue, TypedValueParser};
    let names = Role::ALL.map(|r| {
        let v = PossibleValue::new(r.name());
        if r == Role::Primary {
            v.alias("master")
        } else {
            v
        }
    });
    clap::builder::PossibleValuesParser::new(names).try_map(|s| s.parse::<Role>())
}

/// Where the daemon's control socket is.
#[derive(Debug, clap::Args)]
struct Socket {
    /// The control socket [default: [control] socket of --config, else
    /// /run/ctsync/ctsync.sock].
    #[arg(long)]
    socket: Option<std::path::PathBuf>,
    /// Take the socket path from this configuration file.
    #[arg(long, short)]
    config: Option<std::path::PathBuf>,
    /// Ask about this network namespace (a daemon with [namespaces] replicates many).
    #[arg(long)]
    netns: Option<String>,
}

impl Socket {
    fn path(&self) -> Result<std::path::PathBuf> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        match &self.config {
            Some(c) => Ok(ctsync::config::Config::load(c)?.control.socket),
            None => Ok(std::path::PathBuf::from("/run/ctsync/ctsync.sock")),
        }
    }

    fn ask(&self, request: &str) -> Result<serde_json::Value> {
        ctsync::control::request(&self.path()?, &self.line(request))
    }

    /// The request line: `request`, for the namespace `--netns` names if any.
    fn line(&self, request: &str) -> String {
        match &self.netns {
            Some(n) => format!("netns {n} {request}"),
            None => request.to_string(),
        }
    }
}

/// `ctsync import FILE`: the TOML on stdout, a one-line summary on stderr; an unreadable
/// or malformed file is one line on stderr and exit status 2.
fn import(file: &std::path::Path) -> bool {
    let done = std::fs::read(file)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e}: expected a conntrackd.conf",
                file.display()
            )
        })
        .and_then(|bytes| ctsync::import::import(&bytes, &file.display().to_string()));
    match done {
        Ok(i) => {
            print!("{}", i.toml);
            eprintln!(
                "ctsync import: {} settings not mapped or to fill in, listed at the end of the output with their lines",
                i.unmapped.len()
            );
            true
        }
        Err(e) => {
            eprintln!("ctsync: {e:#}");
            false
        }
    }
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
    /// Wait until the table holds at least COUNT entries; print the wall-clock time when it
    /// did (for takeover benchmarks).
    WaitCount {
        /// How many entries.
        #[arg(long)]
        count: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Delete every entry.
    Flush,
}

fn run(cli: Cli) -> Result<bool> {
    let (netns, op) = match cli.command {
        Command::Run { config } => {
            let cfg = ctsync::config::Config::load(&config)?;
            ctsync::run(cfg, &config)?;
            return Ok(true);
        }
        Command::Demo {
            nodes,
            routers,
            tcp,
            udp,
            no_control,
        } => {
            let me = std::env::current_exe()?;
            if let Some(n) = routers {
                let (tcp, udp) = (tcp.unwrap_or(2), udp.unwrap_or(1));
                return ctsync_lab::demo::run_routers(me, usize::from(n), tcp, udp, !no_control);
            }
            let (tcp, udp) = (tcp.unwrap_or(20), udp.unwrap_or(10));
            return ctsync_lab::demo::run(me, usize::from(nodes), tcp, udp, !no_control);
        }
        Command::BenchSessions {
            daemon,
            advert_ms,
            tcp,
            udp,
            background,
        } => {
            let me = std::env::current_exe()?;
            return ctsync_lab::bench::bench(me, daemon, advert_ms, tcp, udp, background);
        }
        Command::Keygen => {
            println!("{}", ctsync::config::new_key()?);
            return Ok(true);
        }
        Command::Generate { what, dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            for path in generate::write(what, cmd, &dir)? {
                println!("{}", path.display());
            }
            return Ok(true);
        }
        Command::Status { at, json } => {
            if json {
                println!("{}", at.ask("status")?);
            } else {
                print!("{}", at.ask("status text")?["text"].as_str().unwrap_or(""));
            }
            return Ok(true);
        }
        Command::Role { role, at } => {
            let v = at.ask(&format!("role {}", role.name()))?;
            println!("role: {}", v["role"].as_str().unwrap_or("?"));
            return Ok(true);
        }
        Command::Commit { at } => {
            let v = at.ask("commit")?;
            println!("committed {} flows to the kernel", v["flows"]);
            return Ok(true);
        }
        Command::Flush { which, at } => {
            at.ask(&format!("flush {which}"))?;
            println!("flushed {which}");
            return Ok(true);
        }
        Command::Resync { at } => {
            at.ask("resync")?;
            println!("re-reading the kernel table");
            return Ok(true);
        }
        Command::RequestResync { at } => {
            at.ask("request-resync")?;
            println!("asked the peers for their tables");
            return Ok(true);
        }
        Command::Bulk { at } => {
            at.ask("bulk")?;
            println!("sending our table to the peers");
            return Ok(true);
        }
        Command::Dump { which, json, at } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let n =
                ctsync::control::stream(&at.path()?, &at.line(&format!("dump {which}")), |v| {
                    use std::io::Write;
                    if json {
                        writeln!(out, "{v}")
                    } else {
                        match v["origin"].as_str() {
                            Some(o) => {
                                writeln!(out, "{} from {o}", v["text"].as_str().unwrap_or("?"))
                            }
                            None => writeln!(out, "{}", v["text"].as_str().unwrap_or("?")),
                        }
                    }
                })?;
            drop(out);
            if !json {
                eprintln!("{n} flows");
            }
            return Ok(true);
        }
        Command::Import { file } => return Ok(import(&file)),
        Command::Load { netns, op } => (netns, op),
    };
    if let LoadOp::WaitCount { count, timeout } = op {
        let (at, seen) = load::wait_count(netns.as_deref(), count, Duration::from_secs(timeout))?;
        println!(
            "{}",
            serde_json::json!({"op": "wait-count", "reached_at": at, "count": seen})
        );
        return Ok(at.is_some());
    }
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
        LoadOp::WaitCount { .. } => true,
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
