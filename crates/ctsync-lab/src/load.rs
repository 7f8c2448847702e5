//! `ctsync load`: fill, empty and churn a kernel conntrack table as fast as it allows,
//! and time dumps. Every operation prints one JSON object.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ctnetlink::{Conntrack, DumpItem, Errno, Flow, FlowOp, Netns};
use serde::Serialize;

use crate::synth::{self, Mix};

/// Open a request socket in `netns` (or here).
pub fn open(netns: Option<&str>) -> Result<Conntrack> {
    match netns {
        Some(name) => {
            let ns = Netns::named(name).with_context(|| {
                format!("network namespace {name:?} (create it with `ip netns add {name}`)")
            })?;
            Conntrack::open_in(&ns).with_context(|| format!("ctnetlink socket in netns {name}"))
        }
        None => Conntrack::open().context("ctnetlink socket"),
    }
}

/// Errors by errno name, as counted in a report.
#[derive(Debug, Default, Serialize)]
pub struct ErrorCounts(BTreeMap<String, u64>);

impl ErrorCounts {
    fn add(&mut self, e: Errno) {
        let name = match e.0 {
            libc::EEXIST => "EEXIST".to_string(),
            libc::ENOENT => "ENOENT".to_string(),
            libc::ENOMEM => "ENOMEM".to_string(),
            libc::EINVAL => "EINVAL".to_string(),
            libc::EBUSY => "EBUSY".to_string(),
            n => format!("errno {n}"),
        };
        *self.0.entry(name).or_default() += 1;
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// What `fill` and `delete` report.
#[derive(Debug, Serialize)]
pub struct BulkReport {
    /// `fill` or `delete`.
    pub op: &'static str,
    /// The mix of entries.
    pub mix: Mix,
    /// Entries asked for.
    pub requested: u64,
    /// Entries the kernel applied.
    pub applied: u64,
    /// Refusals by errno.
    pub errors: ErrorCounts,
    /// Wall-clock seconds, building the messages included.
    pub seconds: f64,
    /// Applied entries per second.
    pub per_second: f64,
    /// `sendmsg` calls made.
    pub sendmsgs: u64,
}

/// Create (or delete) entries `start..start+count` of `mix` in one batched stream.
pub fn bulk(
    ct: &mut Conntrack,
    op: FlowOp,
    mix: Mix,
    start: u64,
    count: u64,
    timeout: u32,
) -> Result<BulkReport> {
    if start + count > synth::MAX_INDEX {
        bail!(
            "--start + --count must stay below {} (the address plan's size)",
            synth::MAX_INDEX
        );
    }
    let mut errors = ErrorCounts::default();
    let began = Instant::now();
    // Flows are built lazily, one at a time, into the request buffer: no per-flow heap.
    let flows = (start..start + count).map(|i| synth::flow(i, mix, timeout));
    let report = apply_owned(ct, flows.map(|f| (op, f)), &mut errors)?;
    let seconds = began.elapsed().as_secs_f64();
    Ok(BulkReport {
        op: if op == FlowOp::Delete {
            "delete"
        } else {
            "fill"
        },
        mix,
        requested: count,
        applied: report.applied,
        errors,
        seconds,
        per_second: report.applied as f64 / seconds.max(1e-9),
        sendmsgs: report.sendmsgs,
    })
}

/// Apply owned flows in batches of up to 4096 (the batch API borrows its flows).
fn apply_owned(
    ct: &mut Conntrack,
    ops: impl Iterator<Item = (FlowOp, Flow)>,
    errors: &mut ErrorCounts,
) -> Result<ctnetlink::BatchReport> {
    let mut total = ctnetlink::BatchReport::default();
    let mut chunk: Vec<(FlowOp, Flow)> = Vec::with_capacity(4096);
    let mut ops = ops.peekable();
    while ops.peek().is_some() {
        chunk.clear();
        chunk.extend(ops.by_ref().take(4096));
        let r = ct
            .apply(chunk.iter().map(|(op, f)| (*op, f)), |_, e| errors.add(e))
            .context("batched write to the kernel")?;
        total.sent += r.sent;
        total.applied += r.applied;
        total.failed += r.failed;
        total.sendmsgs += r.sendmsgs;
    }
    Ok(total)
}

/// What `churn` reports.
#[derive(Debug, Serialize)]
pub struct ChurnReport {
    /// Always `churn`.
    pub op: &'static str,
    /// The mix of entries.
    pub mix: Mix,
    /// Flows per second asked for.
    pub target_rate: u64,
    /// Milliseconds each flow lives before it is deleted.
    pub lifetime_ms: u64,
    /// Flows created.
    pub created: u64,
    /// Flows deleted (all of them, after the drain at the end).
    pub deleted: u64,
    /// Refusals by errno.
    pub errors: ErrorCounts,
    /// Seconds of churn (the final drain not included).
    pub seconds: f64,
    /// Flows created per second achieved.
    pub achieved_rate: f64,
    /// Most flows alive at once.
    pub max_live: u64,
}

/// Create flows at `rate` per second for `duration`, deleting each `lifetime` after its
/// creation; at the end delete what is left. `rate` 0 means as fast as possible.
pub fn churn(
    ct: &mut Conntrack,
    mix: Mix,
    rate: u64,
    lifetime: Duration,
    duration: Duration,
    timeout: u32,
) -> Result<ChurnReport> {
    const TICK: Duration = Duration::from_millis(5);
    const BURST: u64 = 2048; // creates per turn when unpaced
    let mut errors = ErrorCounts::default();
    let mut live: VecDeque<(Instant, u64, u64)> = VecDeque::new(); // (delete at, first, count)
    let (mut created, mut deleted, mut max_live) = (0u64, 0u64, 0u64);
    let began = Instant::now();
    let mut next = 0u64;
    let mut ops: Vec<(FlowOp, Flow)> = Vec::new();
    // Bounded: the loop ends when `duration` has passed, whatever the kernel does.
    while began.elapsed() < duration {
        let now = Instant::now();
        let due = if rate == 0 {
            created + BURST
        } else {
            (now - began).as_secs_f64().mul_add(rate as f64, 0.0) as u64
        };
        ops.clear();
        while live.front().is_some_and(|(at, _, _)| *at <= now) {
            if let Some((_, first, count)) = live.pop_front() {
                ops.extend(
                    (first..first + count).map(|i| (FlowOp::Delete, synth::flow(i, mix, timeout))),
                );
                deleted += count;
            }
        }
        if due > created {
            let n = due - created;
            ops.extend((next..next + n).map(|i| (FlowOp::Create, synth::flow(i, mix, timeout))));
            live.push_back((now + lifetime, next, n));
            next = (next + n) % synth::MAX_INDEX;
            created += n;
        }
        max_live = max_live.max(created - deleted);
        if !ops.is_empty() {
            ct.apply(ops.iter().map(|(op, f)| (*op, f)), |_, e| errors.add(e))
                .context("batched write to the kernel")?;
        } else if rate != 0 {
            std::thread::sleep(TICK);
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    ops.clear();
    for (_, first, count) in live.drain(..) {
        ops.extend((first..first + count).map(|i| (FlowOp::Delete, synth::flow(i, mix, timeout))));
        deleted += count;
    }
    apply_owned(ct, ops.drain(..), &mut errors)?;
    Ok(ChurnReport {
        op: "churn",
        mix,
        target_rate: rate,
        lifetime_ms: lifetime.as_millis() as u64,
        created,
        deleted,
        errors,
        seconds,
        achieved_rate: created as f64 / seconds.max(1e-9),
        max_live,
    })
}

/// What `dump` reports.
#[derive(Debug, Serialize)]
pub struct DumpReport {
    /// Always `dump`.
    pub op: &'static str,
    /// Entries read.
    pub flows: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Entries per second.
    pub per_second: f64,
    /// Restarts after `NLM_F_DUMP_INTR`.
    pub restarts: u32,
    /// Bytes one decoded [`Flow`] occupies (it holds no heap for kernel-known attributes).
    pub flow_bytes: usize,
}

/// Read the whole table once, decoding every entry.
pub fn dump(ct: &mut Conntrack) -> Result<DumpReport> {
    let began = Instant::now();
    let mut n = 0u64;
    let summary = ct
        .dump(None, |item| match item {
            DumpItem::Flow(_) => n += 1,
            DumpItem::Restart => n = 0,
        })
        .context("dumping the conntrack table")?;
    let seconds = began.elapsed().as_secs_f64();
    Ok(DumpReport {
        op: "dump",
        flows: n,
        seconds,
        per_second: n as f64 / seconds.max(1e-9),
        restarts: summary.restarts,
        flow_bytes: size_of::<Flow>(),
    })
}

/// Whether a bulk report had refusals (for the exit code).
pub fn had_errors(r: &BulkReport) -> bool {
    r.errors.total() > 0
}

/// Wait until the kernel table of `netns` (or this namespace) holds at least `n` entries,
/// reading `nf_conntrack_count` every millisecond for at most `limit`. Returns the wall
/// clock (seconds since the epoch) when it did, or `None`, and the last count: benchmark
/// scripts compare it with a time they took before signalling a takeover.
pub fn wait_count(netns: Option<&str>, n: u64, limit: Duration) -> Result<(Option<f64>, u64)> {
    use std::io::{Read, Seek};
    let open = || std::fs::File::open("/proc/sys/net/netfilter/nf_conntrack_count");
    // /proc/sys/net belongs to the namespace of the thread that opens it.
    let mut f = match netns {
        Some(name) => Netns::named(name)?.run(open)?,
        None => open()?,
    };
    let start = Instant::now();
    let mut buf = String::new();
    let mut count = 0;
    while start.elapsed() < limit {
        buf.clear();
        f.rewind()?;
        f.read_to_string(&mut buf)?;
        count = buf.trim().parse().unwrap_or(0);
        if count >= n {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            return Ok((Some(wall), count));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok((None, count))
}
