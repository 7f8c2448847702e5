//! The client side of the control socket: one request line, one JSON reply line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Send `request` to the daemon at `socket` and return its reply.
pub fn request(socket: &Path, request: &str) -> Result<serde_json::Value> {
    let mut s = connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .context("reading the daemon's reply")?;
    reply(&line)
}

/// One reply line as JSON; the daemon's refusal as an error.
fn reply(line: &str) -> Result<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).context("the daemon's reply is not JSON")?;
    if let Some(e) = v.get("error") {
        bail!(
            "the daemon refused: {}",
            e.as_str().unwrap_or("unknown error")
        );
    }
    Ok(v)
}

/// Send `request` and hand each JSON line of the reply to `each` until the closing
/// `{"end":true,…}` line; the number of lines handled.
pub fn stream(
    socket: &Path,
    request: &str,
    mut each: impl FnMut(&serde_json::Value) -> std::io::Result<()>,
) -> Result<u64> {
    let mut s = connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut n = 0;
    for line in BufReader::new(s).lines() {
        let v = reply(&line.context("reading the daemon's reply")?)?;
        if v["end"] == true {
            return Ok(n);
        }
        match each(&v) {
            Ok(()) => n += 1,
            // `ctsync dump … | head`: the reader went away, which is fine.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(n),
            Err(e) => return Err(e.into()),
        }
    }
    bail!("the daemon closed the connection before the end of the reply")
}

fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                "is `ctsync run` running?"
            }
            std::io::ErrorKind::PermissionDenied => "the control socket is root-only",
            _ => "",
        };
        anyhow::anyhow!(
            "cannot reach the daemon at {}: {e}{}{hint}",
            socket.display(),
            if hint.is_empty() { "" } else { " — " }
        )
    })
}

/// A request line's namespace when it names one (`netns NAME REQUEST`: a daemon that
/// replicates namespaces hands REQUEST to that namespace's node), and the request.
pub fn split_netns(line: &str) -> (Option<&str>, &str) {
    let t = line.trim_start();
    match t.strip_prefix("netns ") {
        Some(rest) => {
            let rest = rest.trim_start();
            let (name, req) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            (Some(name), req)
        }
        None => (None, line),
    }
}

/// Which cache a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// This node's flows.
    Internal,
    /// The peers' flows.
    External,
    /// Both (flush only).
    All,
}

/// A control request, as the daemon understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `status`: the status as JSON.
    Status,
    /// `status text`: the status as `ctsync status` prints it, in `{"text": …}`.
    StatusText,
    /// `status summary`: role, readiness, flows and peers up only (what a daemon of
    /// namespaces gathers from each of them).
    StatusSummary,
    /// `role primary|backup|fault`
    Role(ctsync_core::Role),
    /// `resync`
    Resync,
    /// `request-resync`
    RequestResync,
    /// `bulk`
    Bulk,
    /// `commit`
    Commit,
    /// `flush internal|external|all`
    Flush(Cache),
    /// `dump internal|external`
    Dump(Cache),
}

impl Request {
    /// Parse one request line; the error is the reply's message.
    pub fn parse(line: &str) -> Result<Request, String> {
        use ctsync_core::Role;
        let words: Vec<&str> = line.split_whitespace().collect();
        let cache = |w: &str, all: bool| match w {
            "internal" => Some(Cache::Internal),
            "external" => Some(Cache::External),
            "all" if all => Some(Cache::All),
            _ => None,
        };
        Ok(match words.as_slice() {
            ["status"] => Request::Status,
            ["status", "text"] => Request::StatusText,
            ["status", "summary"] => Request::StatusSummary,
            // keepalived's names too, in either case (`MASTER` is primary: Role's FromStr).
            ["role", r] => {
                Request::Role(r.parse::<Role>().map_err(|_| {
                    format!("unknown role {r:?}: expected primary, backup or fault")
                })?)
            }
            ["resync"] => Request::Resync,
            ["request-resync"] => Request::RequestResync,
            ["bulk"] => Request::Bulk,
            ["commit"] => Request::Commit,
            ["flush", w] => Request::Flush(
                cache(w, true)
                    .ok_or_else(|| format!("flush {w:?}: expected internal, external or all"))?,
            ),
            ["dump", w] => Request::Dump(
                cache(w, false)
                    .ok_or_else(|| format!("dump {w:?}: expected internal or external"))?,
            ),
            _ => {
                let shown: String = line.trim().chars().take(80).collect();
                return Err(format!("unknown request {shown:?}"));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_may_name_its_namespace() {
        assert_eq!(
            split_netns("netns qrouter-1 status text\n"),
            (Some("qrouter-1"), "status text\n")
        );
        assert_eq!(split_netns("status"), (None, "status"));
        assert_eq!(Request::parse("status summary"), Ok(Request::StatusSummary));
        assert_eq!(split_netns("netns r1"), (Some("r1"), ""));
        assert_eq!(
            Request::parse(split_netns("netns r1 commit").1),
            Ok(Request::Commit)
        );
    }

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert_eq!(Request::parse("status\n"), Ok(Request::Status));
        assert_eq!(Request::parse("status text"), Ok(Request::StatusText));
        assert_eq!(Request::parse("flush all"), Ok(Request::Flush(Cache::All)));
        assert_eq!(
            Request::parse("role MASTER"),
            Ok(Request::Role(ctsync_core::Role::Primary))
        );
        assert_eq!(
            Request::parse("role FAULT"),
            Ok(Request::Role(ctsync_core::Role::Fault))
        );
        assert!(
            Request::parse("dump all")
                .unwrap_err()
                .contains("internal or external")
        );
        assert!(
            Request::parse("role boss")
                .unwrap_err()
                .contains("primary, backup or fault")
        );
        assert!(
            Request::parse("\u{0}\u{ff}garbage")
                .unwrap_err()
                .starts_with("unknown request")
        );
        assert!(Request::parse("").is_err());
    }
}
