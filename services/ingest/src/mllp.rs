//! MLLP framing: `0x0B` payload `0x1C 0x0D`. Bytes outside a frame (stray newlines between
//! frames) are skipped; a frame larger than the limit is answered with AR and its first bytes
//! are kept, and the rest of it is skipped up to its end marker.

use crate::Ingest;
use crate::metrics;
use sluice_runtime::shutdown::Shutdown;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const START: u8 = 0x0B;
pub const END: [u8; 2] = [0x1C, 0x0D];

/// Wraps a payload in an MLLP frame.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    out.push(START);
    out.extend_from_slice(payload);
    out.extend_from_slice(&END);
    out
}

/// What the decoder found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A complete frame's payload.
    Frame(Vec<u8>),
    /// A frame that went past the limit: its first `max` bytes.
    Oversized(Vec<u8>),
}

/// Incremental frame decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max: usize,
    /// Skipping the rest of an oversized frame.
    skipping: bool,
}

impl Decoder {
    pub fn new(max: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            max,
            skipping: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete frame out of the buffer, if there is one.
    pub fn next_frame(&mut self) -> Option<Decoded> {
        loop {
            if self.skipping {
                let end = memchr::memmem::find(&self.buf, &END)?;
                self.buf.drain(..end + 2);
                self.skipping = false;
                continue;
            }
            let Some(start) = memchr::memchr(START, &self.buf) else {
                // nothing but noise between frames
                self.buf.clear();
                return None;
            };
            if start > 0 {
                self.buf.drain(..start);
            }
            match memchr::memmem::find(&self.buf[1..], &END) {
                Some(end) if end <= self.max => {
                    let payload = self.buf[1..1 + end].to_vec();
                    self.buf.drain(..end + 3);
                    return Some(Decoded::Frame(payload));
                }
                found => {
                    if found.is_none() && self.buf.len() - 1 <= self.max {
                        return None;
                    }
                    let head = self.buf[1..1 + self.max.min(self.buf.len() - 1)].to_vec();
                    match found {
                        Some(end) => {
                            self.buf.drain(..end + 3);
                        }
                        None => {
                            self.buf.clear();
                            self.skipping = true;
                        }
                    }
                    return Some(Decoded::Oversized(head));
                }
            }
        }
    }
}

/// Serves one connection: one message at a time, each answered before the next is read.
pub async fn connection(mut stream: TcpStream, peer: &str, ingest: &Ingest, shutdown: &Shutdown) -> std::io::Result<()> {
    let cfg = &ingest.cfg;
    let idle = Duration::from_secs(cfg.idle_timeout_secs);
    let mut dec = Decoder::new(cfg.max_frame_bytes);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(d) = dec.next_frame() {
            let started = Instant::now();
            let handled = match d {
                Decoded::Frame(p) => ingest.handle(&p, false, peer).await,
                Decoded::Oversized(p) => ingest.handle(&p, true, peer).await,
            };
            stream.write_all(&frame(&handled.ack)).await?;
            metrics()
                .ack_seconds
                .with_label_values(&[cfg.listener_name.as_str()])
                .observe(started.elapsed().as_secs_f64());
        }
        if shutdown.is_triggered() {
            return Ok(());
        }
        let read = tokio::select! {
            r = tokio::time::timeout(idle, stream.read(&mut chunk)) => r,
            _ = shutdown.wait() => return Ok(()),
        };
        match read {
            Err(_) => {
                tracing::debug!("idle timeout, closing connection");
                return Ok(());
            }
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => dec.push(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Sends one message over an open connection and reads its ACK (a minimal MLLP client, used by
/// `sluice send` and the tests).
pub async fn send_one(stream: &mut TcpStream, payload: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    stream.write_all(&frame(payload)).await?;
    let mut dec = Decoder::new(16 * 1024 * 1024);
    let mut buf = vec![0u8; 8192];
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(Decoded::Frame(ack)) = dec.next_frame() {
            return Ok(ack);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no ack in time"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the ack",
            ));
        }
        dec.push(&buf[..n]);
    }
}

/// MSA-1 of an ACK (AA, AE, AR ...), or an empty string.
pub fn ack_code(ack: &[u8]) -> String {
    let m = sluice_hl7::Message::parse(ack);
    m.find("MSA", 0)
        .map(|s| String::from_utf8_lossy(s.field(1).raw()).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads_and_noise_between() {
        let mut d = Decoder::new(100);
        d.push(b"\r\n\x0bMSH|a\rPID|1");
        assert_eq!(d.next_frame(), None);
        d.push(b"\r\x1c\r\n\x0bMSH|b\x1c\r");
        assert_eq!(d.next_frame(), Some(Decoded::Frame(b"MSH|a\rPID|1\r".to_vec())));
        assert_eq!(d.next_frame(), Some(Decoded::Frame(b"MSH|b".to_vec())));
        assert_eq!(d.next_frame(), None);
    }

    #[test]
    fn oversized_frames_are_cut_and_skipped() {
        let mut d = Decoder::new(4);
        d.push(b"\x0bMSH|123456");
        assert_eq!(d.next_frame(), Some(Decoded::Oversized(b"MSH|".to_vec())));
        d.push(b"789\x1c\r\x0bMSH\x1c\r");
        assert_eq!(d.next_frame(), Some(Decoded::Frame(b"MSH".to_vec())));
    }
}
