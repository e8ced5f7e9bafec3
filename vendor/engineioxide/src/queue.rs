//! A socket's outgoing packets, bounded in packets and in bytes, holding memory only while it
//! holds packets.
//!
//! (Crawbl patch.) It replaces a tokio `mpsc` channel and a `watch` channel per socket: tokio
//! allocates a whole block of 32 slots (~5.4 KB here) when an `mpsc` channel is created, whatever
//! its bound, and keeps it for the channel's life; a `watch` channel costs another ~0.5 KB. Most
//! sockets are idle most of the time, so this queue allocates on the first packet and frees its
//! buffer each time a transport has taken everything. It also counts the bytes queued, so that a
//! client that stops reading costs a bounded amount of memory, not `max_buffer_size` packets of
//! any size.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
};

use engineioxide_core::{Packet, PacketBuf};
use futures_util::task::AtomicWaker;
use tokio::sync::{Notify, mpsc::error::TrySendError};

pub(crate) struct Queue {
    state: Mutex<State>,
    /// The transport task reading the queue: there is at most one, the holder of
    /// `Socket::internal_rx`.
    reader: AtomicWaker,
    /// Those waiting for the queue to close (`Socket::closed`).
    on_close: Notify,
    max_packets: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct State {
    packets: VecDeque<PacketBuf>,
    /// The bytes of payload in `packets`.
    bytes: usize,
    /// Places promised to permits that have not sent yet.
    reserved: usize,
    /// The newest volatile packets not sent yet; a newer volatile send replaces them.
    volatile: Option<PacketBuf>,
    closed: bool,
}

/// The payload bytes of `packets` (what they cost while queued).
fn size_of(packets: &PacketBuf) -> usize {
    packets
        .iter()
        .map(|packet| match packet {
            Packet::Message(msg) => msg.len(),
            Packet::Binary(data) | Packet::BinaryV3(data) => data.len(),
            _ => 1,
        })
        .sum()
}

impl Queue {
    /// `max_packets` packet groups and, once it holds any, `max_bytes` of payload (a single group
    /// larger than that is still taken by an empty queue, so that it is not refused for ever).
    pub(crate) fn new(max_packets: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            reader: AtomicWaker::new(),
            on_close: Notify::new(),
            max_packets: max_packets.max(1),
            max_bytes,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn has_room(&self, state: &State, bytes: usize) -> bool {
        let queued = state.packets.len() + state.reserved;
        queued < self.max_packets && (queued == 0 || state.bytes + bytes <= self.max_bytes)
    }

    /// As tokio's `mpsc::Sender::try_send`, which this replaces: a refused group comes back.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_send(&self, packets: PacketBuf) -> Result<(), TrySendError<PacketBuf>> {
        let state = self.state();
        if state.closed {
            return Err(TrySendError::Closed(packets));
        }
        if !self.has_room(&state, size_of(&packets)) {
            return Err(TrySendError::Full(packets));
        }
        self.push(state, packets);
        Ok(())
    }

    /// Appends `packets` and wakes the reader.
    fn push(&self, mut state: MutexGuard<'_, State>, packets: PacketBuf) {
        state.bytes += size_of(&packets);
        state.packets.push_back(packets);
        drop(state);
        self.reader.wake();
    }

    /// Queues `packets` whatever the bounds (a protocol packet that must go, e.g. the `Noop` that
    /// ends a pending poll during an upgrade); false once the queue is closed.
    pub(crate) fn send_unbounded(&self, packets: PacketBuf) -> bool {
        let state = self.state();
        if state.closed {
            return false;
        }
        self.push(state, packets);
        true
    }

    /// Promises a place to a later [`Queue::send_reserved`] (or [`Queue::release`]).
    pub(crate) fn try_reserve(&self) -> Result<(), TrySendError<()>> {
        let mut state = self.state();
        if state.closed {
            return Err(TrySendError::Closed(()));
        }
        if !self.has_room(&state, 0) {
            return Err(TrySendError::Full(()));
        }
        state.reserved += 1;
        Ok(())
    }

    /// Uses a place promised by [`Queue::try_reserve`].
    pub(crate) fn send_reserved(&self, packets: PacketBuf) {
        let mut state = self.state();
        state.reserved -= 1;
        if !state.closed {
            self.push(state, packets);
        }
    }

    /// Gives back a place promised by [`Queue::try_reserve`] and not used.
    pub(crate) fn release(&self) {
        self.state().reserved -= 1;
    }

    /// Keeps `packets` as the newest volatile packets; false once the queue is closed.
    pub(crate) fn send_volatile(&self, packets: PacketBuf) -> bool {
        let mut state = self.state();
        if state.closed {
            return false;
        }
        state.volatile = Some(packets);
        drop(state);
        self.reader.wake();
        true
    }

    /// The next packets: queued ones first, then the newest volatile ones; `None` once the queue
    /// is closed and empty.
    pub(crate) fn try_recv(&self) -> Option<PacketBuf> {
        let mut state = self.state();
        if let Some(packets) = state.packets.pop_front() {
            state.bytes -= size_of(&packets);
            if state.packets.is_empty() {
                // Idle sockets are the many: give the buffer back.
                state.packets = VecDeque::new();
            }
            return Some(packets);
        }
        state.volatile.take()
    }

    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<PacketBuf>> {
        if let Some(packets) = self.try_recv() {
            return Poll::Ready(Some(packets));
        }
        self.reader.register(cx.waker());
        // Again, for packets queued before the waker was registered.
        match self.try_recv() {
            Some(packets) => Poll::Ready(Some(packets)),
            None if self.is_closed() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    pub(crate) async fn recv(&self) -> Option<PacketBuf> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Refuses every later send; what is queued can still be received.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.reader.wake();
        self.on_close.notify_waiters();
    }

    /// Frees what is still queued (once no transport will read it).
    pub(crate) fn clear(&self) {
        let mut state = self.state();
        state.packets = VecDeque::new();
        state.bytes = 0;
        state.volatile = None;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state().closed
    }

    pub(crate) async fn closed(&self) {
        let notified = self.on_close.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.is_closed() {
            notified.await;
        }
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Queue")
            .field("packets", &state.packets.len())
            .field("bytes", &state.bytes)
            .field("closed", &state.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use engineioxide_core::Str;
    use smallvec::smallvec;

    use super::*;

    fn message(text: &'static str) -> PacketBuf {
        smallvec![Packet::Message(Str::from(text))]
    }

    #[test]
    fn bounded_in_packets_and_bytes_and_an_empty_queue_takes_one_large_group() {
        let queue = Queue::new(3, 10);
        queue.try_send(message("0123456789ab")).unwrap();
        assert!(matches!(
            queue.try_send(message("x")),
            Err(TrySendError::Full(_))
        ));
        queue.try_recv().unwrap();
        queue.try_send(message("0123456")).unwrap();
        queue.try_send(message("012")).unwrap();
        assert!(matches!(
            queue.try_send(message("x")),
            Err(TrySendError::Full(_))
        ));
        queue.try_recv().unwrap();
        queue.try_send(message("x")).unwrap();
        queue.try_reserve().unwrap();
        assert!(matches!(queue.try_reserve(), Err(TrySendError::Full(()))));
        queue.release();
        queue.try_reserve().unwrap();
        queue.send_reserved(message("y"));
        assert!(matches!(
            queue.try_send(message("z")),
            Err(TrySendError::Full(_))
        ));
    }

    #[test]
    fn volatile_packets_come_after_queued_ones_and_only_the_newest() {
        let queue = Queue::new(8, 1024);
        assert!(queue.send_volatile(message("v1")));
        assert!(queue.send_volatile(message("v2")));
        queue.try_send(message("a")).unwrap();
        assert_eq!(queue.try_recv(), Some(message("a")));
        assert_eq!(queue.try_recv(), Some(message("v2")));
        assert_eq!(queue.try_recv(), None);
    }

    #[test]
    fn a_drained_queue_gives_its_buffer_back() {
        let queue = Queue::new(8, 1024);
        queue.try_send(message("a")).unwrap();
        queue.try_send(message("b")).unwrap();
        queue.try_recv().unwrap();
        assert!(queue.state().packets.capacity() > 0);
        queue.try_recv().unwrap();
        assert_eq!(queue.state().packets.capacity(), 0);
        assert_eq!(queue.state().bytes, 0);
    }

    #[tokio::test]
    async fn closing_refuses_sends_lets_the_rest_be_read_and_wakes_everyone() {
        let queue = std::sync::Arc::new(Queue::new(8, 1024));
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.closed().await }
        });
        queue.try_send(message("a")).unwrap();
        queue.close();
        assert!(matches!(
            queue.try_send(message("b")),
            Err(TrySendError::Closed(_))
        ));
        assert_eq!(queue.recv().await, Some(message("a")));
        assert_eq!(queue.recv().await, None);
        waiting.await.unwrap();
        queue.closed().await;
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken_by_a_send() {
        let queue = std::sync::Arc::new(Queue::new(8, 1024));
        let reader = tokio::spawn({
            let queue = queue.clone();
            async move { queue.recv().await }
        });
        tokio::task::yield_now().await;
        queue.try_send(message("a")).unwrap();
        assert_eq!(reader.await.unwrap(), Some(message("a")));
    }
}
