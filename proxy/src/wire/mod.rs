//! The MySQL client/server protocol, server side, plus the packet-level pieces the backend
//! connector reuses. This layer knows nothing about keyspaces or routing: it decodes
//! commands and calls a [`Handler`], which answers through a [`Responder`].

pub mod auth;
pub mod charset;
pub mod codec;
pub mod conn;
pub mod consts;
pub mod delays;
pub mod handshake;
pub mod login;
#[cfg(test)]
mod login_tests;
pub mod packet;
pub mod packets;
pub mod params;
pub mod responder;
pub mod rows;
pub mod sha2;
pub mod stream;
#[cfg(test)]
mod tests;

pub use conn::{serve, Account, ClientInfo, Handler, HandlerResult, Service};
pub use packet::{PacketError, PacketIo};
pub use packets::{ColumnDef, ErrPacket, OkPacket};
pub use responder::Responder;
pub use stream::{NetStream, TlsInfo};
