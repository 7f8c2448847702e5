//! One sync socket for many namespaces' nodes (`[namespaces]`, docs/PROTOCOL.md §14).
//! Each namespace's [`super::SyncLink`] has a [`MuxPort`] where a single daemon has a UDP
//! socket: what it sends goes out on the shared socket behind the namespace's tag, and
//! what arrives there for its id waits in its [`Inbox`] until its loop reads it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use tokio::net::UdpSocket;

/// Datagrams an inbox holds at most; more are dropped and counted, as a full socket
/// buffer would drop them (the senders retransmit).
pub(super) const INBOX_LIMIT: usize = 8192;

/// Datagrams an empty inbox keeps room for.
const IDLE_KEPT: usize = 16;

/// The datagrams that arrived for one namespace.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    queue: VecDeque<Vec<u8>>,
    waker: Option<Waker>,
    /// Dropped because the inbox was full.
    pub(super) dropped: u64,
}

impl Inbox {
    /// Queue a datagram (the tag removed) and wake the namespace's loop.
    pub(super) fn push(&mut self, datagram: &[u8]) {
        if self.queue.len() >= INBOX_LIMIT {
            self.dropped += 1;
            return;
        }
        self.queue.push_back(datagram.to_vec());
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// An inbox shared by the demultiplexer and one namespace's loop (one thread).
pub(super) type SharedInbox = Rc<RefCell<Inbox>>;

thread_local! {
    /// A tag, then the datagram being sent: one buffer for every port of this thread (one
    /// of 2 KiB a port was a router's largest allocation after its tables).
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A namespace's end of the shared socket.
pub(super) struct MuxPort {
    shared: Rc<UdpSocket>,
    /// The tag every datagram sent goes out behind.
    tag: Box<[u8]>,
    inbox: SharedInbox,
}

impl MuxPort {
    /// The port of the namespace with id `id` on `shared`, reading from `inbox`.
    pub(super) fn new(shared: Rc<UdpSocket>, id: &str, inbox: SharedInbox) -> MuxPort {
        let mut tag = Vec::new();
        ctsync_wire::tag::put_tag(&mut tag, id.as_bytes());
        MuxPort {
            shared,
            tag: tag.into_boxed_slice(),
            inbox,
        }
    }

    /// Ready when a datagram waits in the inbox.
    pub(super) fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut inbox = self.inbox.borrow_mut();
        if inbox.queue.is_empty() {
            inbox.waker = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    /// Take the next datagram into `buf` (resized to its length): its length, or
    /// `WouldBlock`.
    pub(super) fn try_recv(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        let mut inbox = self.inbox.borrow_mut();
        let d = inbox
            .queue
            .pop_front()
            .ok_or(std::io::ErrorKind::WouldBlock)?;
        if inbox.queue.is_empty() && inbox.queue.capacity() > IDLE_KEPT {
            // A burst is over: its room goes back.
            inbox.queue = VecDeque::new();
        }
        buf.clear();
        buf.extend_from_slice(&d);
        Ok(d.len())
    }

    /// Send a datagram behind the tag.
    pub(super) fn try_send_to(
        &mut self,
        datagram: &[u8],
        to: SocketAddr,
    ) -> std::io::Result<usize> {
        OUT.with_borrow_mut(|out| {
            out.clear();
            out.extend_from_slice(&self.tag);
            out.extend_from_slice(datagram);
            self.shared.try_send_to(out, to)
        })
    }
}
