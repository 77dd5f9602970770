//! Byte-level reading and writing of protocol fields: fixed-width little-endian integers,
//! length-encoded integers and strings, NUL-terminated strings.
//!
//! [`Reader`] never panics on short or malformed input: every read returns
//! [`Malformed`] instead, which the connection turns into a protocol error.

use bytes::{BufMut, BytesMut};

/// A packet was shorter than its fields claim, or a field had an impossible value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// A cursor over a packet payload.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn peek(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(Malformed);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), Malformed> {
        self.take(n).map(|_| ())
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u24(&mut self) -> Result<u32, Malformed> {
        let b = self.take(3)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length-encoded integer; `Ok(None)` for the NULL marker 0xfb.
    pub fn lenenc_int(&mut self) -> Result<Option<u64>, Malformed> {
        let first = self.u8()?;
        Ok(match first {
            0xfb => None,
            0xfc => Some(self.u16()? as u64),
            0xfd => Some(self.u24()? as u64),
            0xfe => Some(self.u64()?),
            0xff => return Err(Malformed),
            n => Some(n as u64),
        })
    }

    /// A length-encoded integer that must not be NULL.
    pub fn lenenc(&mut self) -> Result<u64, Malformed> {
        self.lenenc_int()?.ok_or(Malformed)
    }

    /// A length-encoded string; `Ok(None)` for NULL (as in text result rows).
    pub fn lenenc_bytes_opt(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
        match self.lenenc_int()? {
            None => Ok(None),
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| Malformed)?;
                self.take(n).map(Some)
            }
        }
    }

    pub fn lenenc_bytes(&mut self) -> Result<&'a [u8], Malformed> {
        self.lenenc_bytes_opt()?.ok_or(Malformed)
    }

    /// Bytes up to (not including) the next NUL, which is consumed.
    pub fn nul_bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let pos = self.buf.iter().position(|&b| b == 0).ok_or(Malformed)?;
        let s = &self.buf[..pos];
        self.buf = &self.buf[pos + 1..];
        Ok(s)
    }

    /// Like [`Reader::nul_bytes`] but a missing NUL at the end of the packet is tolerated.
    pub fn nul_bytes_or_rest(&mut self) -> &'a [u8] {
        match self.buf.iter().position(|&b| b == 0) {
            Some(pos) => {
                let s = &self.buf[..pos];
                self.buf = &self.buf[pos + 1..];
                s
            }
            None => std::mem::take(&mut self.buf),
        }
    }
}

/// Appends a length-encoded integer.
pub fn put_lenenc_int(buf: &mut BytesMut, n: u64) {
    if n < 251 {
        buf.put_u8(n as u8);
    } else if n < 1 << 16 {
        buf.put_u8(0xfc);
        buf.put_u16_le(n as u16);
    } else if n < 1 << 24 {
        buf.put_u8(0xfd);
        buf.put_uint_le(n, 3);
    } else {
        buf.put_u8(0xfe);
        buf.put_u64_le(n);
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_bytes(buf: &mut BytesMut, s: &[u8]) {
    put_lenenc_int(buf, s.len() as u64);
    buf.put_slice(s);
}

/// Appends a NUL-terminated string.
pub fn put_nul_bytes(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// Bytes a length-encoded integer takes.
pub fn lenenc_int_len(n: u64) -> usize {
    if n < 251 {
        1
    } else if n < 1 << 16 {
        3
    } else if n < 1 << 24 {
        4
    } else {
        9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trips_at_every_width() {
        for n in [
            0u64,
            250,
            251,
            65535,
            65536,
            (1 << 24) - 1,
            1 << 24,
            u64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_lenenc_int(&mut b, n);
            assert_eq!(b.len(), lenenc_int_len(n));
            let mut r = Reader::new(&b);
            assert_eq!(r.lenenc_int().unwrap(), Some(n));
            assert!(r.is_empty());
        }
    }

    #[test]
    fn short_input_is_malformed_not_a_panic() {
        assert_eq!(Reader::new(&[0xfc, 1]).lenenc_int(), Err(Malformed));
        assert_eq!(Reader::new(&[5, b'a']).lenenc_bytes(), Err(Malformed));
        assert_eq!(Reader::new(b"abc").nul_bytes(), Err(Malformed));
        assert_eq!(Reader::new(&[0xff]).lenenc_int(), Err(Malformed));
        assert_eq!(Reader::new(&[0xfb]).lenenc_int(), Ok(None));
    }
}
