//! Packet framing: a 3-byte little-endian length, a 1-byte sequence id, then the payload.
//!
//! Payloads of 16 MiB - 1 bytes or more are split into physical packets of exactly
//! 0xffffff bytes followed by a shorter one (possibly empty); [`PacketIo::read_packet`]
//! joins them and [`PacketIo::write_packet`] splits them. Relays use the physical-packet
//! calls so a large row is streamed through without being joined.
//!
//! Sequence ids are checked on every read: a client that sends packets out of order gets
//! error 1156 and is disconnected.

use super::consts::MAX_PHYSICAL_PAYLOAD;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why reading or writing a packet failed.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("connection closed by peer")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("packet sequence id {got} where {expected} was expected")]
    OutOfOrder { expected: u8, got: u8 },
    #[error("packet of {size} bytes exceeds max_allowed_packet ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("the peer did not read for {0:?} (write timeout)")]
    WriteTimeout(std::time::Duration),
}

/// Flush the write buffer once it holds this much, so large results stream.
pub const FLUSH_THRESHOLD: usize = 64 * 1024;
const INITIAL_READ_BUF: usize = 4 * 1024;
/// The least a read asks the kernel for.
const READ_CHUNK: usize = 16 * 1024;
/// After a large packet, a read buffer bigger than this is given back.
const KEEP_READ_BUF: usize = 256 * 1024;

/// A framed MySQL connection: buffered reads and writes with sequence-id bookkeeping.
pub struct PacketIo<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    seq: u8,
    /// Longest a flush may wait for the peer to read (None: forever).
    write_timeout: Option<std::time::Duration>,
    /// Flushes drop what is buffered instead of sending it (EXPLAIN ANALYZE runs a
    /// statement whose answer the client does not get).
    discard: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketIo<S> {
    pub fn new(stream: S) -> Self {
        PacketIo {
            stream,
            rbuf: BytesMut::with_capacity(INITIAL_READ_BUF),
            wbuf: BytesMut::new(),
            seq: 0,
            write_timeout: None,
            discard: false,
        }
    }

    /// Makes flushes fail with [`PacketError::WriteTimeout`] when the peer stops reading.
    pub fn set_write_timeout(&mut self, t: Option<std::time::Duration>) {
        self.write_timeout = t;
    }

    /// The sequence id the next packet (read or written) carries.
    pub fn seq(&self) -> u8 {
        self.seq
    }

    pub fn set_seq(&mut self, seq: u8) {
        self.seq = seq;
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream back, for a protocol upgrade (TLS). `None` when the peer already sent
    /// more than was read (it did not wait for the upgrade: a protocol violation).
    /// Callers flush first.
    pub fn into_inner(self) -> Option<S> {
        self.rbuf.is_empty().then_some(self.stream)
    }

    /// Bytes written but not flushed yet.
    pub fn pending_write(&self) -> usize {
        self.wbuf.len()
    }

    /// True when a complete physical packet is already buffered (no read needed).
    pub fn has_buffered_packet(&self) -> bool {
        self.rbuf.len() >= 4 && {
            let len = u32::from_le_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], 0]) as usize;
            self.rbuf.len() >= 4 + len
        }
    }

    async fn fill(&mut self, want: usize) -> Result<(), PacketError> {
        while self.rbuf.len() < want {
            // Read generously: one syscall should bring many small packets.
            self.rbuf.reserve((want - self.rbuf.len()).max(READ_CHUNK));
            let n = self.stream.read_buf(&mut self.rbuf).await?;
            if n == 0 {
                return Err(if self.rbuf.is_empty() {
                    PacketError::Closed
                } else {
                    PacketError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a packet",
                    ))
                });
            }
        }
        Ok(())
    }

    /// Reads one physical packet's header, checking its sequence id. Returns the length.
    async fn read_header(&mut self) -> Result<usize, PacketError> {
        self.fill(4).await?;
        let len = u32::from_le_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], 0]) as usize;
        let got = self.rbuf[3];
        if got != self.seq {
            return Err(PacketError::OutOfOrder {
                expected: self.seq,
                got,
            });
        }
        self.seq = self.seq.wrapping_add(1);
        Ok(len)
    }

    /// Reads one physical packet (for relays): the payload of at most 0xffffff bytes.
    pub async fn read_physical(&mut self) -> Result<Bytes, PacketError> {
        let len = self.read_header().await?;
        self.fill(4 + len).await?;
        self.rbuf.advance(4);
        Ok(self.rbuf.split_to(len).freeze())
    }

    /// Reads one logical packet, joining continuation packets, refusing payloads above `max`.
    pub async fn read_packet(&mut self, max: usize) -> Result<Bytes, PacketError> {
        let len = self.read_header().await?;
        if len > max {
            return Err(PacketError::TooLarge { size: len, max });
        }
        self.fill(4 + len).await?;
        self.rbuf.advance(4);
        let first = self.rbuf.split_to(len);
        if len < MAX_PHYSICAL_PAYLOAD {
            let out = first.freeze();
            self.shrink_read_buffer();
            return Ok(out);
        }
        let mut joined = first;
        loop {
            let len = self.read_header().await?;
            if joined.len() + len > max {
                return Err(PacketError::TooLarge {
                    size: joined.len() + len,
                    max,
                });
            }
            self.fill(4 + len).await?;
            self.rbuf.advance(4);
            joined.unsplit(self.rbuf.split_to(len));
            if len < MAX_PHYSICAL_PAYLOAD {
                break;
            }
        }
        self.shrink_read_buffer();
        Ok(joined.freeze())
    }

    fn shrink_read_buffer(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_READ_BUF {
            self.rbuf = BytesMut::with_capacity(INITIAL_READ_BUF);
        }
    }

    /// Buffers one logical packet, splitting it into physical packets as needed.
    pub fn write_packet(&mut self, payload: &[u8]) {
        let mut rest = payload;
        loop {
            let chunk = rest.len().min(MAX_PHYSICAL_PAYLOAD);
            self.write_physical(&rest[..chunk]);
            rest = &rest[chunk..];
            if chunk < MAX_PHYSICAL_PAYLOAD {
                break;
            }
        }
    }

    /// Buffers one physical packet; `payload` must be at most 0xffffff bytes.
    pub fn write_physical(&mut self, payload: &[u8]) {
        debug_assert!(payload.len() <= MAX_PHYSICAL_PAYLOAD);
        self.wbuf.reserve(4 + payload.len());
        self.wbuf.put_uint_le(payload.len() as u64, 3);
        self.wbuf.put_u8(self.seq);
        self.wbuf.put_slice(payload);
        self.seq = self.seq.wrapping_add(1);
    }

    /// Starts a packet whose payload the caller appends with [`PacketIo::finish_packet`].
    /// Returns the write buffer and the offset of the header. For building small packets
    /// in place without an intermediate buffer.
    pub fn begin_packet(&mut self) -> usize {
        let at = self.wbuf.len();
        self.wbuf.put_slice(&[0, 0, 0, 0]);
        at
    }

    /// The buffer to append the current packet's payload to.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// Completes a packet started by [`PacketIo::begin_packet`]. Payloads that grew past
    /// 16 MiB are re-framed into physical packets.
    pub fn finish_packet(&mut self, at: usize) {
        let len = self.wbuf.len() - at - 4;
        if len < MAX_PHYSICAL_PAYLOAD {
            let header = (len as u32).to_le_bytes();
            self.wbuf[at..at + 3].copy_from_slice(&header[..3]);
            self.wbuf[at + 3] = self.seq;
            self.seq = self.seq.wrapping_add(1);
        } else {
            let payload = self.wbuf.split_off(at + 4);
            self.wbuf.truncate(at);
            self.write_packet(&payload);
        }
    }

    /// Starts (or ends) dropping what is written instead of sending it; what is buffered
    /// when it ends is dropped too.
    pub fn set_discard(&mut self, on: bool) {
        if !on {
            self.wbuf.clear();
        }
        self.discard = on;
    }

    /// Sends everything buffered.
    pub async fn flush(&mut self) -> Result<(), PacketError> {
        if self.discard {
            self.wbuf.clear();
            return Ok(());
        }
        if !self.wbuf.is_empty() {
            // The flush is a no-op on TCP; TLS may hold the last record until it.
            let stream = &mut self.stream;
            let wbuf = &self.wbuf;
            let write = async move {
                stream.write_all(wbuf).await?;
                stream.flush().await
            };
            tokio::pin!(write);
            // Most flushes complete at once (the socket has room): no timer for those.
            match futures::poll!(&mut write) {
                std::task::Poll::Ready(r) => r?,
                std::task::Poll::Pending => match self.write_timeout {
                    Some(t) => tokio::time::timeout(t, write)
                        .await
                        .map_err(|_| PacketError::WriteTimeout(t))??,
                    None => write.await?,
                },
            }
            self.wbuf.clear();
            if self.wbuf.capacity() > KEEP_READ_BUF {
                self.wbuf = BytesMut::new();
            }
        }
        Ok(())
    }

    /// Flushes only when enough is buffered that holding more would cost memory.
    pub async fn flush_if_full(&mut self) -> Result<(), PacketError> {
        if self.wbuf.len() >= FLUSH_THRESHOLD {
            self.flush().await?;
        }
        Ok(())
    }

    /// Closes the write side and discards what the peer still sends, for at most `limit`
    /// time or `max` bytes, so an error written just before is not lost to a reset.
    pub async fn drain(&mut self, limit: std::time::Duration, max: usize) {
        let _ = self.stream.shutdown().await;
        let mut seen = 0usize;
        let mut sink = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(limit, async {
            while seen < max {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n,
                }
            }
        })
        .await;
    }

    /// Shuts the write side down (best effort).
    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_packets_split_and_join() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = PacketIo::new(a);
        let mut r = PacketIo::new(b);
        let big: Vec<u8> = (0..(MAX_PHYSICAL_PAYLOAD * 2 + 5))
            .map(|i| i as u8)
            .collect();
        let exact = vec![7u8; MAX_PHYSICAL_PAYLOAD];
        let writer = tokio::spawn(async move {
            w.write_packet(&big);
            w.write_packet(&exact);
            w.write_packet(b"tail");
            w.flush().await.unwrap();
            big
        });
        let got = r.read_packet(1 << 30).await.unwrap();
        let got2 = r.read_packet(1 << 30).await.unwrap();
        let got3 = r.read_packet(1 << 30).await.unwrap();
        let big = writer.await.unwrap();
        assert_eq!(got.len(), big.len());
        assert!(got[..] == big[..]);
        assert_eq!(got2.len(), MAX_PHYSICAL_PAYLOAD);
        assert_eq!(&got3[..], b"tail");
        // 3 physical for big, 2 for exact (one empty), 1 for tail
        assert_eq!(r.seq(), 6);
    }

    #[tokio::test]
    async fn out_of_order_and_oversized_are_errors() {
        let (a, b) = tokio::io::duplex(4096);
        let mut w = PacketIo::new(a);
        let mut r = PacketIo::new(b);
        w.set_seq(3);
        w.write_packet(b"x");
        w.flush().await.unwrap();
        assert!(matches!(
            r.read_packet(100).await,
            Err(PacketError::OutOfOrder {
                expected: 0,
                got: 3
            })
        ));
        let (a, b) = tokio::io::duplex(4096);
        let mut w = PacketIo::new(a);
        let mut r = PacketIo::new(b);
        w.write_packet(&[1u8; 200]);
        w.flush().await.unwrap();
        assert!(matches!(
            r.read_packet(100).await,
            Err(PacketError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn truncated_packet_is_an_error_not_a_hang() {
        let (a, b) = tokio::io::duplex(4096);
        let mut r = PacketIo::new(b);
        let mut raw = a;
        raw.write_all(&[10, 0, 0, 0, 1, 2]).await.unwrap();
        drop(raw);
        assert!(matches!(r.read_packet(100).await, Err(PacketError::Io(_))));
    }
}
