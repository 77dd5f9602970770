//! The connection-phase packets, both directions: the server greeting (HandshakeV10) and
//! the client's HandshakeResponse41. The proxy writes greetings to clients and parses
//! their responses; the backend connector does the reverse against MariaDB.

use super::codec::{put_lenenc_bytes, put_lenenc_int, put_nul_bytes, Malformed, Reader};
use super::consts::*;
use bytes::{BufMut, BytesMut};

/// The initial handshake packet a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub server_version: String,
    pub connection_id: u32,
    pub scramble: Vec<u8>,
    pub capabilities: u32,
    pub charset: u8,
    pub status: u16,
    pub auth_plugin: String,
}

impl Greeting {
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(10);
        put_nul_bytes(buf, self.server_version.as_bytes());
        buf.put_u32_le(self.connection_id);
        buf.put_slice(&self.scramble[..8]);
        buf.put_u8(0);
        buf.put_u16_le(self.capabilities as u16);
        buf.put_u8(self.charset);
        buf.put_u16_le(self.status);
        buf.put_u16_le((self.capabilities >> 16) as u16);
        buf.put_u8(self.scramble.len() as u8 + 1);
        buf.put_slice(&[0u8; 10]);
        put_nul_bytes(buf, &self.scramble[8..]);
        put_nul_bytes(buf, self.auth_plugin.as_bytes());
    }

    pub fn decode(payload: &[u8]) -> Result<Greeting, Malformed> {
        let mut r = Reader::new(payload);
        if r.u8()? != 10 {
            return Err(Malformed);
        }
        let server_version = String::from_utf8_lossy(r.nul_bytes()?).into_owned();
        let connection_id = r.u32()?;
        let mut scramble = r.take(8)?.to_vec();
        r.skip(1)?;
        let mut capabilities = r.u16()? as u32;
        let charset = r.u8()?;
        let status = r.u16()?;
        capabilities |= (r.u16()? as u32) << 16;
        let auth_len = r.u8()? as usize;
        r.skip(10)?;
        if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let n = auth_len.saturating_sub(8).max(13);
            let part2 = r.take(n.min(r.remaining()))?;
            // The part ends with a NUL that is not part of the scramble.
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            scramble.extend_from_slice(part2);
        }
        let auth_plugin = if capabilities & CLIENT_PLUGIN_AUTH != 0 {
            String::from_utf8_lossy(r.nul_bytes_or_rest()).into_owned()
        } else {
            String::new()
        };
        Ok(Greeting {
            server_version,
            connection_id,
            scramble,
            capabilities,
            charset,
            status,
            auth_plugin,
        })
    }
}

/// A client's HandshakeResponse41.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    pub attributes: Vec<(String, String)>,
}

impl HandshakeResponse {
    /// True for the short SSLRequest a client sends before starting TLS.
    pub fn is_ssl_request(payload: &[u8]) -> bool {
        payload.len() == 32 && {
            let caps = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
            caps & CLIENT_SSL != 0
        }
    }

    pub fn decode(payload: &[u8]) -> Result<HandshakeResponse, Malformed> {
        let mut r = Reader::new(payload);
        let capabilities = r.u32()?;
        if capabilities & CLIENT_PROTOCOL_41 == 0 {
            return Err(Malformed);
        }
        let max_packet = r.u32()?;
        let charset = r.u8()?;
        r.skip(23)?;
        let user = String::from_utf8_lossy(r.nul_bytes()?).into_owned();
        let auth_response = if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes()?.to_vec()
        } else if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let n = r.u8()? as usize;
            r.take(n)?.to_vec()
        } else {
            r.nul_bytes()?.to_vec()
        };
        let mut database = None;
        if capabilities & CLIENT_CONNECT_WITH_DB != 0 && !r.is_empty() {
            let db = r.nul_bytes_or_rest();
            if !db.is_empty() {
                database = Some(String::from_utf8_lossy(db).into_owned());
            }
        }
        let mut auth_plugin = None;
        if capabilities & CLIENT_PLUGIN_AUTH != 0 && !r.is_empty() {
            auth_plugin = Some(String::from_utf8_lossy(r.nul_bytes_or_rest()).into_owned());
        }
        let mut attributes = Vec::new();
        if capabilities & CLIENT_CONNECT_ATTRS != 0 && !r.is_empty() {
            let total = usize::try_from(r.lenenc()?).map_err(|_| Malformed)?;
            let mut attrs = Reader::new(r.take(total)?);
            while !attrs.is_empty() {
                let k = String::from_utf8_lossy(attrs.lenenc_bytes()?).into_owned();
                let v = String::from_utf8_lossy(attrs.lenenc_bytes()?).into_owned();
                attributes.push((k, v));
            }
        }
        Ok(HandshakeResponse {
            capabilities,
            max_packet,
            charset,
            user,
            auth_response,
            database,
            auth_plugin,
            attributes,
        })
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.capabilities);
        buf.put_u32_le(self.max_packet);
        buf.put_u8(self.charset);
        buf.put_slice(&[0u8; 23]);
        put_nul_bytes(buf, self.user.as_bytes());
        if self.capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_bytes(buf, &self.auth_response);
        } else {
            buf.put_u8(self.auth_response.len() as u8);
            buf.put_slice(&self.auth_response);
        }
        if self.capabilities & CLIENT_CONNECT_WITH_DB != 0 {
            put_nul_bytes(buf, self.database.as_deref().unwrap_or("").as_bytes());
        }
        if self.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            put_nul_bytes(buf, self.auth_plugin.as_deref().unwrap_or("").as_bytes());
        }
        if self.capabilities & CLIENT_CONNECT_ATTRS != 0 {
            let mut attrs = BytesMut::new();
            for (k, v) in &self.attributes {
                put_lenenc_bytes(&mut attrs, k.as_bytes());
                put_lenenc_bytes(&mut attrs, v.as_bytes());
            }
            put_lenenc_int(buf, attrs.len() as u64);
            buf.put_slice(&attrs);
        }
    }
}

/// An AuthSwitchRequest payload asking the client to answer `scramble` with `plugin`.
pub fn encode_auth_switch(buf: &mut BytesMut, plugin: &str, scramble: &[u8]) {
    buf.put_u8(0xfe);
    put_nul_bytes(buf, plugin.as_bytes());
    buf.put_slice(scramble);
    buf.put_u8(0);
}

/// Parses an AuthSwitchRequest payload (0xfe header) into (plugin, scramble).
pub fn decode_auth_switch(payload: &[u8]) -> Result<(String, Vec<u8>), Malformed> {
    let mut r = Reader::new(payload);
    if r.u8()? != 0xfe {
        return Err(Malformed);
    }
    let plugin = String::from_utf8_lossy(r.nul_bytes()?).into_owned();
    let data = r.rest();
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    Ok((plugin, data.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_round_trips() {
        let g = Greeting {
            server_version: "5.5.5-10.11.6-MariaDB-shardgate".into(),
            connection_id: 42,
            scramble: (1..=20).collect(),
            capabilities: SERVER_CAPABILITIES,
            charset: 45,
            status: SERVER_STATUS_AUTOCOMMIT,
            auth_plugin: "mysql_native_password".into(),
        };
        let mut b = BytesMut::new();
        g.encode(&mut b);
        assert_eq!(Greeting::decode(&b).unwrap(), g);
    }

    #[test]
    fn response_round_trips_with_every_optional_part() {
        let r = HandshakeResponse {
            capabilities: SERVER_CAPABILITIES,
            max_packet: 1 << 24,
            charset: 45,
            user: "app".into(),
            auth_response: vec![9; 20],
            database: Some("commerce".into()),
            auth_plugin: Some("caching_sha2_password".into()),
            attributes: vec![("_client_name".into(), "test".into())],
        };
        let mut b = BytesMut::new();
        r.encode(&mut b);
        assert_eq!(HandshakeResponse::decode(&b).unwrap(), r);
        for cut in 0..b.len() - 1 {
            // Truncations must never panic; most are errors.
            let _ = HandshakeResponse::decode(&b[..cut]);
        }
    }

    #[test]
    fn auth_switch_round_trips() {
        let mut b = BytesMut::new();
        encode_auth_switch(&mut b, "mysql_native_password", &[7; 20]);
        let (p, s) = decode_auth_switch(&b).unwrap();
        assert_eq!(p, "mysql_native_password");
        assert_eq!(s, vec![7; 20]);
    }
}
