//! The control socket's server side: one request line in ([`Request::parse`]), one
//! JSON reply line out, or a JSON line per flow for `dump`. Root only. Each client is
//! served by a task of its own; only the answer is made on the event loop.

use std::time::{Duration, Instant};

use ctnetlink::Flow;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::{Daemon, log};
use crate::control::{Cache, Request};

/// The longest request line read.
const REQUEST_LIMIT: u64 = 4096;
/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a reply may take to write (a `dump` of a large table included).
const DUMP_TIMEOUT: Duration = Duration::from_secs(60);

/// A flow as `ctsync dump --json` prints it.
fn flow_json(f: &Flow, origin: Option<&str>) -> serde_json::Value {
    let tcp_state = match &f.protoinfo {
        Some(ctnetlink::ProtoInfo::Tcp(t)) => t.state,
        _ => None,
    };
    json!({
        "proto": f.orig.proto,
        "src": f.orig.src.to_string(),
        "dst": f.orig.dst.to_string(),
        "sport": f.orig.src_port(),
        "dport": f.orig.dst_port(),
        "reply_src": f.reply.src.to_string(),
        "reply_dst": f.reply.dst.to_string(),
        "reply_sport": f.reply.src_port(),
        "reply_dport": f.reply.dst_port(),
        "zone": f.zone,
        "mark": f.mark,
        "timeout": f.timeout,
        "tcp_state": tcp_state,
        "status": f.status.map(|s| s.bits()),
        "text": f.to_string(),
        "origin": origin,
    })
}

/// What a request gets back.
pub(super) enum Reply {
    /// One JSON line.
    Line(serde_json::Value),
    /// Lines of a dump, written in the background.
    Lines(Vec<String>),
}

/// Control clients served at once; a further one is closed at once (a stuck script
/// must not pile up tasks).
pub(super) const MAX_CLIENTS: usize = 64;

/// What a control client's task asks of the event loop: everything that reads or changes
/// the node happens there, between other inputs, and takes no I/O wait.
pub(super) enum Call {
    /// A client was refused for its credentials (counted).
    Refused,
    /// A request, the namespace it names (`--netns`), and where its reply goes.
    Request {
        /// The namespace named, if any.
        netns: Option<String>,
        /// What is asked.
        request: Request,
        /// Where the reply goes.
        reply: oneshot::Sender<Reply>,
    },
    /// A namespace's share of a SIGHUP of the daemon of namespaces: the file it read,
    /// and the namespace's keys if they changed.
    Reload(Box<NamespaceReload>),
}

/// What [`Call::Reload`] carries.
pub(super) struct NamespaceReload {
    /// The configuration read (one copy shared by every namespace).
    pub(super) config: std::sync::Arc<crate::config::Config>,
    /// New keys, derived for the namespace.
    pub(super) keys: Option<(ctsync_wire::ClusterSecret, Vec<ctsync_wire::ClusterSecret>)>,
}

/// One control connection, in a task of its own so that a client that says nothing (or
/// reads its reply slowly) never holds up the event loop: its credentials are checked,
/// its request line read (at most [`REQUEST_TIMEOUT`]), handed to the loop through
/// `calls`, and the reply written back.
pub(super) async fn client(
    stream: UnixStream,
    calls: mpsc::Sender<Call>,
    _permit: OwnedSemaphorePermit,
) {
    // The socket is mode 0600; the peer's credentials are checked as well, so that a
    // socket directory with loose permissions or a passed descriptor does not open it.
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let uid = stream.peer_cred().map(|c| c.uid());
    let allowed = matches!(uid, Ok(u) if u == 0 || u == me);
    let (r, mut w) = stream.into_split();
    // Read the request first, also from a refused client, so that it is not cut off
    // mid-write.
    let mut line = String::new();
    let mut reader = BufReader::new(r.take(REQUEST_LIMIT));
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    if !allowed {
        log(
            "warn",
            format!("control socket: refused a client with uid {uid:?}: root only"),
        );
        let _ = calls.send(Call::Refused).await;
        let _ = w
            .write_all(b"{\"error\":\"permission denied: the control socket is root-only\"}\n")
            .await;
        return;
    }
    let (netns, rest) = crate::control::split_netns(&line);
    let reply = match read {
        Ok(Ok(_)) => match Request::parse(rest) {
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                let call = Call::Request {
                    netns: netns.map(str::to_string),
                    request,
                    reply: tx,
                };
                if calls.send(call).await.is_err() {
                    return; // the daemon is stopping
                }
                match rx.await {
                    Ok(r) => r,
                    Err(_) => return,
                }
            }
            Err(e) => Reply::Line(json!({ "error": e })),
        },
        _ => Reply::Line(json!({"error": "unreadable request"})),
    };
    let write = async {
        match reply {
            Reply::Line(v) => w.write_all(format!("{v}\n").as_bytes()).await?,
            Reply::Lines(lines) => {
                for l in lines {
                    w.write_all(l.as_bytes()).await?;
                }
            }
        }
        w.flush().await
    };
    let _ = tokio::time::timeout(DUMP_TIMEOUT, write).await;
}

impl Daemon {
    /// A control client's call, on the event loop: answered at once.
    pub(super) fn call(&mut self, call: Call) {
        match call {
            Call::Refused => self.control_refused += 1,
            Call::Reload(r) => {
                let NamespaceReload { config, keys } = *r;
                self.reload_namespace(&config, keys);
            }
            Call::Request {
                netns: Some(n),
                reply,
                ..
            } => {
                let _ = reply.send(Reply::Line(json!({
                    "error": format!("--netns {n}: this daemon replicates one table, not namespaces ([namespaces] is not configured)")
                })));
            }
            Call::Request {
                netns: None,
                request,
                reply,
            } => {
                let _ = reply.send(self.answer(request));
            }
        }
    }

    /// Carry out a request, and what the core asks for as a result, before the reply.
    fn answer(&mut self, request: Request) -> Reply {
        let ok = json!({"ok": true});
        let v = match request {
            Request::Status => serde_json::to_value(self.status())
                .unwrap_or_else(|e| json!({"error": format!("status: {e}")})),
            Request::StatusText => json!({"text": self.status().to_string()}),
            Request::StatusSummary => json!({
                "role": self.node.role(),
                "ready": self.ready(),
                "caches": {"internal": self.node.internal().len(), "external": self.node.external_len()},
                "peers_up": self.node.peers_up(),
            }),
            Request::Role(role) => {
                self.set_role(role);
                json!({"ok": true, "role": role.name()})
            }
            Request::Resync => {
                self.node.resync_internal();
                ok
            }
            Request::RequestResync => {
                self.node.request_resync(Instant::now());
                if let Some(e) = &mut self.conntrackd {
                    e.request_resync();
                }
                ok
            }
            Request::Bulk => {
                self.node.bulk(Instant::now());
                if let Some(e) = &mut self.conntrackd {
                    e.bulk(&self.node, &mut self.kernel, "gets our table (ctsync bulk)");
                }
                ok
            }
            Request::Commit => {
                let n = self.node.commit();
                json!({"ok": true, "flows": n})
            }
            Request::Flush(which) => {
                if which != Cache::External {
                    self.node.flush_internal();
                    // Rebuilt from the kernel at once: the internal cache must not stay
                    // empty while the kernel holds flows.
                    self.node.resync_internal();
                }
                if which != Cache::Internal {
                    self.node.flush_external();
                    self.node.request_resync(Instant::now());
                }
                ok
            }
            Request::Dump(which) => return Reply::Lines(self.dump_lines(which == Cache::Internal)),
        };
        self.flush();
        Reply::Line(v)
    }

    /// `dump internal|external`: a JSON line per flow, then `{"end":true,"flows":N}`.
    fn dump_lines(&self, internal: bool) -> Vec<String> {
        let mut lines = Vec::new();
        if internal {
            for f in self.node.internal().flows() {
                lines.push(format!("{}\n", flow_json(&f, None)));
            }
        } else {
            for p in self.node.status().peers {
                let origin = self
                    .link
                    .address(p.id)
                    .map_or_else(|| format!("{:#x}", p.id), |a| a.to_string());
                for f in self.node.external(p.id).into_iter().flat_map(|t| t.flows()) {
                    lines.push(format!("{}\n", flow_json(&f, Some(&origin))));
                }
            }
        }
        let n = lines.len();
        lines.push(format!("{}\n", json!({"end": true, "flows": n})));
        lines
    }
}
