//! [`NetStream`]: a connection (a client's, or a backend's) that is plain TCP or TLS over
//! TCP.
//!
//! An enum rather than a boxed trait object: on a plain connection every read and write
//! costs one predictable branch more than a bare `TcpStream`, with no allocation and no
//! dynamic dispatch. The TLS variant is boxed so the enum stays as small as the plain one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection, before or after a TLS upgrade.
pub enum NetStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, after an SSLRequest: the server side for clients, the client side
    /// for backends.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

/// What TLS negotiated on a connection, for `SHOW STATUS LIKE 'Ssl%'` and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`, as MySQL's `Ssl_version` shows it.
    pub version: String,
    /// The cipher suite's IANA name.
    pub cipher: String,
}

impl NetStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            NetStream::Plain(s) => s,
            NetStream::Tls(s) => s.get_ref().0,
        }
    }

    /// The negotiated protocol and cipher, or `None` on a plain connection.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        match self {
            NetStream::Plain(_) => None,
            NetStream::Tls(s) => {
                let conn = s.get_ref().1;
                let version = match conn.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
                    Some(v) => format!("{v:?}"),
                    None => String::new(),
                };
                // IANA names (rustls prefixes TLS 1.3 suites with `TLS13_`).
                let cipher = conn
                    .negotiated_cipher_suite()
                    .and_then(|c| c.suite().as_str())
                    .map(|n| match n.strip_prefix("TLS13_") {
                        Some(rest) => format!("TLS_{rest}"),
                        None => n.to_string(),
                    })
                    .unwrap_or_default();
                Some(TlsInfo { version, cipher })
            }
        }
    }
}

impl AsyncRead for NetStream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NetStream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            NetStream::Plain(s) => s.is_write_vectored(),
            NetStream::Tls(s) => s.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_flush(cx),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NetStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
