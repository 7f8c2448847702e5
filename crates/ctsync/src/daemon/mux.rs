//! One sync socket for many namespaces' nodes (`[namespaces]`, docs/PROTOCOL.md §14).
//! Each namespace's [`super::SyncLink`] has a [`MuxPort`] where a single daemon has a UDP
//! socket: what it sends goes out on the shared socket behind the namespace's tag, and
//! what arrives there for its id waits in its [`Inbox`] until its loop reads it. Roles
//! and control calls for the loop wait in its [`Mailbox`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use ctsync_core::Role;
use tokio::net::UdpSocket;

use super::control::{Call, MAX_CLIENTS};

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

/// What the daemon of namespaces hands one namespace's loop besides its datagrams: the
/// role its state file or notify FIFO last gave, and control calls. (Two tokio channels
/// had cost 2.3 KiB a router, each allocating a block of 32 slots.)
#[derive(Default)]
pub(super) struct Mailbox {
    /// The role given and not yet taken. A newer one replaces it: the loop would set
    /// both in turn, the newer last.
    role: Option<Role>,
    calls: VecDeque<Call>,
    waker: Option<Waker>,
    /// Its loop is gone (stopped, or its start failed): nothing is taken any more.
    closed: bool,
}

/// A mailbox shared by the daemon of namespaces and one namespace's loop (one thread).
pub(super) type SharedMailbox = Rc<RefCell<Mailbox>>;

/// What a loop takes from its [`Mailbox`].
pub(super) enum Taken {
    Role(Role),
    Call(Call),
}

impl Mailbox {
    /// Hand the loop a role; false if the loop is gone.
    pub(super) fn give_role(&mut self, role: Role) -> bool {
        if self.closed {
            return false;
        }
        self.role = Some(role);
        self.wake();
        true
    }

    /// Hand the loop a call. A request is refused (given back) while
    /// [`MAX_CLIENTS`] wait already, as a full channel refused it; a reload always
    /// waits its turn (a router left on the old keys would drop out once its peers stop
    /// accepting them). Every call is refused once the loop is gone.
    pub(super) fn give_call(&mut self, call: Call) -> Result<(), Call> {
        let waiting = self.calls.len();
        if self.closed || (matches!(call, Call::Request { .. }) && waiting >= MAX_CLIENTS) {
            return Err(call);
        }
        self.calls.push_back(call);
        self.wake();
        Ok(())
    }

    /// The role, then the calls in the order given; pending (the loop woken later)
    /// while there is neither.
    pub(super) fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<Taken> {
        if let Some(role) = self.role.take() {
            return Poll::Ready(Taken::Role(role));
        }
        match self.calls.pop_front() {
            Some(call) => {
                if self.calls.is_empty() {
                    self.calls = VecDeque::new();
                }
                Poll::Ready(Taken::Call(call))
            }
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Held by a namespace's task: when the task ends or is aborted, its mailbox closes and
/// the calls waiting there are dropped (their clients see the reply channel close).
pub(super) struct Closing(pub(super) SharedMailbox);

impl Drop for Closing {
    fn drop(&mut self) {
        let mut m = self.0.borrow_mut();
        m.closed = true;
        m.role = None;
        m.calls = VecDeque::new();
        m.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::control::Request;

    fn request() -> (
        Call,
        tokio::sync::oneshot::Receiver<super::super::control::Reply>,
    ) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let call = Call::Request {
            netns: None,
            request: Request::Status,
            reply,
        };
        (call, rx)
    }

    fn take(m: &SharedMailbox) -> Poll<Taken> {
        m.borrow_mut()
            .poll_take(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn the_newest_role_comes_first_then_the_calls_in_order() {
        let m = SharedMailbox::default();
        assert!(take(&m).is_pending());
        let (first, _r1) = request();
        let (second, _r2) = request();
        assert!(m.borrow_mut().give_call(first).is_ok());
        assert!(m.borrow_mut().give_role(Role::Backup));
        assert!(m.borrow_mut().give_role(Role::Primary));
        assert!(m.borrow_mut().give_call(second).is_ok());
        assert!(matches!(take(&m), Poll::Ready(Taken::Role(Role::Primary))));
        assert!(matches!(
            take(&m),
            Poll::Ready(Taken::Call(Call::Request { .. }))
        ));
        assert!(matches!(
            take(&m),
            Poll::Ready(Taken::Call(Call::Request { .. }))
        ));
        assert!(take(&m).is_pending());
    }

    #[test]
    fn requests_beyond_the_cap_and_calls_to_a_gone_loop_are_given_back() {
        let m = SharedMailbox::default();
        let mut replies = Vec::new();
        for _ in 0..MAX_CLIENTS {
            let (call, rx) = request();
            replies.push(rx);
            assert!(m.borrow_mut().give_call(call).is_ok());
        }
        let (over, _rx) = request();
        assert!(m.borrow_mut().give_call(over).is_err());
        // A call that is no request (a reload) always waits its turn.
        assert!(m.borrow_mut().give_call(Call::Refused).is_ok());
        drop(Closing(m.clone()));
        // The waiting calls went with the loop: their clients see the reply closed.
        assert!(replies.iter_mut().all(|rx| rx.try_recv().is_err()));
        assert!(!m.borrow_mut().give_role(Role::Primary));
        let (late, _rx) = request();
        assert!(m.borrow_mut().give_call(late).is_err());
        assert!(take(&m).is_pending());
    }
}
