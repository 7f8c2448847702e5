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

use ctnetlink::{EventKind, Expectation, Flow};
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

/// Kernel events a mailbox holds at most. More are dropped and counted, and the loop is
/// told of an overrun (it reads its table again), as an overflowing socket of its own
/// would have done.
pub(super) const EVENTS_LIMIT: usize = 65_536;

/// A kernel event of one namespace, read by the daemon of namespaces from its one event
/// socket (docs/NEUTRON.md) for that namespace's loop.
#[derive(Debug)]
pub(super) enum KernelEvent {
    /// A conntrack entry changed; `portid`: the netlink port whose request caused it.
    Flow {
        kind: EventKind,
        portid: u32,
        flow: Flow,
    },
    /// An expectation changed.
    Expectation {
        kind: EventKind,
        portid: u32,
        expectation: Expectation,
    },
}

/// What the daemon of namespaces hands one namespace's loop besides its datagrams: the
/// role its state file or notify FIFO last gave, control calls, and its kernel events.
/// (Two tokio channels had cost 2.3 KiB a router, each allocating a block of 32 slots.)
#[derive(Default)]
pub(super) struct Mailbox {
    /// The role given and not yet taken. A newer one replaces it: the loop would set
    /// both in turn, the newer last.
    role: Option<Role>,
    calls: VecDeque<Call>,
    /// Kernel events in the order the kernel sent them.
    events: VecDeque<KernelEvent>,
    /// Events were lost (the daemon's socket overran, or this mailbox was full) since the
    /// loop last looked.
    overrun: bool,
    /// Events dropped because the mailbox was full.
    pub(super) events_dropped: u64,
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

    /// Hand the loop a kernel event; false if the loop is gone. A full mailbox drops
    /// it and every event it holds, counted, and tells the loop that events were lost
    /// (see [`Mailbox::give_overrun`]).
    pub(super) fn give_event(&mut self, event: KernelEvent) -> bool {
        if self.closed {
            return false;
        }
        if self.events.len() >= EVENTS_LIMIT {
            self.events_dropped += self.events.len() as u64 + 1;
            self.give_overrun();
        } else {
            self.events.push_back(event);
            self.wake();
        }
        true
    }

    /// Tell the loop that kernel events were lost (the daemon's socket overran). The
    /// events it still holds came before the loss: the table the loop reads again
    /// supersedes them, and taken after that read they would undo newer changes, so
    /// they go. What comes after is newer than the loss, and queued as usual.
    pub(super) fn give_overrun(&mut self) {
        if !self.closed {
            self.overrun = true;
            self.events = VecDeque::new();
            self.wake();
        }
    }

    /// Ready when kernel events, or word of lost ones, wait.
    pub(super) fn poll_events(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.events.is_empty() && !self.overrun {
            self.waker = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Whether events were lost since the last call (then the table must be read again:
    /// the events still queued came after the loss).
    pub(super) fn take_overrun(&mut self) -> bool {
        std::mem::take(&mut self.overrun)
    }

    /// The next kernel event. Once the queue is empty its room goes back, past a few
    /// entries (a burst is over).
    pub(super) fn take_event(&mut self) -> Option<KernelEvent> {
        let e = self.events.pop_front();
        if self.events.is_empty() && self.events.capacity() > IDLE_KEPT {
            self.events = VecDeque::new();
        }
        e
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
        m.events = VecDeque::new();
        m.overrun = false;
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

    fn event(i: u8) -> KernelEvent {
        let o = ctnetlink::Tuple::ports(
            ctnetlink::ipproto::UDP,
            "198.18.1.100".parse().unwrap(),
            10_000,
            "198.19.0.100".parse().unwrap(),
            7001,
        );
        let mut flow = Flow::new(o, o.inverse());
        flow.mark = Some(u32::from(i));
        KernelEvent::Flow {
            kind: EventKind::New,
            portid: 0,
            flow,
        }
    }

    fn mark(e: Option<KernelEvent>) -> Option<u32> {
        match e? {
            KernelEvent::Flow { flow, .. } => flow.mark,
            KernelEvent::Expectation { .. } => None,
        }
    }

    #[test]
    fn events_come_in_order_and_a_full_mailbox_drops_them_and_says_so() {
        let m = SharedMailbox::default();
        let ready = |m: &SharedMailbox| {
            m.borrow_mut()
                .poll_events(&mut Context::from_waker(Waker::noop()))
                .is_ready()
        };
        assert!(!ready(&m));
        assert!(m.borrow_mut().give_event(event(1)));
        assert!(m.borrow_mut().give_event(event(2)));
        assert!(ready(&m));
        assert!(!m.borrow_mut().take_overrun());
        assert_eq!(mark(m.borrow_mut().take_event()), Some(1));
        assert_eq!(mark(m.borrow_mut().take_event()), Some(2));
        assert!(m.borrow_mut().take_event().is_none());
        assert!(!ready(&m));

        for _ in 0..EVENTS_LIMIT + 3 {
            assert!(m.borrow_mut().give_event(event(3)));
        }
        // The one past the limit went with all it held (older than the loss: the table
        // read again supersedes them); the two after it are queued.
        assert_eq!(m.borrow().events_dropped, EVENTS_LIMIT as u64 + 1);
        assert!(m.borrow_mut().take_overrun(), "the loss is told");
        assert!(!m.borrow_mut().take_overrun(), "once");
        assert_eq!(mark(m.borrow_mut().take_event()), Some(3));
        assert_eq!(mark(m.borrow_mut().take_event()), Some(3));
        assert!(m.borrow_mut().take_event().is_none());
        assert!(
            m.borrow().events.capacity() <= IDLE_KEPT,
            "the burst's room went back"
        );

        assert!(m.borrow_mut().give_event(event(5)));
        m.borrow_mut().give_overrun();
        assert!(
            m.borrow_mut().take_event().is_none(),
            "events before an overrun go with it"
        );

        m.borrow_mut().give_overrun();
        assert!(ready(&m), "an overrun alone wakes the loop");
        drop(Closing(m.clone()));
        assert!(
            !m.borrow_mut().give_event(event(4)),
            "a gone loop takes no events"
        );
        assert!(!ready(&m));
    }
}
