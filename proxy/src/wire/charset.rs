//! Client character sets, and the lossless text view of the bytes a client sends.
//!
//! SQL arrives as bytes in the client's character set (`character_set_client`), which may
//! not be UTF-8 and may not even be valid in it: a dump restore sends BLOBs as raw bytes
//! inside string literals. The proxy must send MariaDB exactly those bytes, yet its lexer
//! and sqlparser read `str`.
//!
//! The *view* bridges the two. [`decode`] turns the bytes into a `String` in which
//! - ASCII bytes that stand alone are themselves,
//! - for UTF-8 clients, valid UTF-8 characters are themselves,
//! - every other byte `b` (a byte of a multi-byte character of another character set, an
//!   invalid UTF-8 byte, any byte >= 0x80 of a single-byte character set) becomes the
//!   private-use character U+10FF00 + `b`.
//!
//! [`encode`] reverses it exactly: `encode(decode(x)) == x` for every input and character
//! set. Text the proxy writes itself (database names, rendered literals) is ordinary
//! UTF-8 in the view and is sent as such. Because every byte of a multi-byte character of
//! GBK, Big5, Shift-JIS or GB18030 is escaped, a trail byte that happens to be `\` (0x5C)
//! or a quote can never be mistaken for one by the lexer, which is what MySQL's own
//! charset-aware lexer guarantees.
//!
//! Valid UTF-8 input that encodes a character of the escape range itself is escaped byte
//! by byte, so the mapping stays one-to-one.

use std::borrow::Cow;

/// First code point of the escape range: U+10FF00 + byte.
const ESCAPE_BASE: u32 = 0x10FF00;
/// The first byte of every escape character's UTF-8 encoding (U+10FFxx is F4 8F BC..BF xx).
const ESCAPE_LEAD: u8 = 0xF4;

/// How a character set lays out its characters, as far as the lexer is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// UTF-8 (utf8mb3, utf8mb4).
    Utf8,
    /// One byte per character (latin1, ascii, binary, cp1251, ...), or a multi-byte set
    /// whose bytes are all >= 0x80 (ujis, euc-kr's leads, gb2312): escaping every byte
    /// >= 0x80 on its own keeps ASCII meaning intact.
    SingleByte,
    /// Big5: lead 0xA1-0xF9, trail 0x40-0x7E or 0xA1-0xFE.
    Big5,
    /// GBK: lead 0x81-0xFE, trail 0x40-0x7E or 0x80-0xFE.
    Gbk,
    /// Shift-JIS and cp932: lead 0x81-0x9F or 0xE0-0xFC, trail 0x40-0x7E or 0x80-0xFC.
    Sjis,
    /// GB18030: GBK's two-byte form plus four-byte sequences (digits in bytes 2 and 4).
    Gb18030,
    /// EUC-KR: lead 0x81-0xFE, trail 0x41-0x5A, 0x61-0x7A or 0x81-0xFE.
    EucKr,
}

/// A client character set: its name, how the lexer must walk it, and how to read its
/// text as Unicode (for routing values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Charset {
    pub name: &'static str,
    pub layout: Layout,
    /// None: the bytes are taken as they are (UTF-8 and `binary`).
    encoding: Option<&'static encoding_rs::Encoding>,
}

impl Default for Charset {
    fn default() -> Self {
        Charset::UTF8MB4
    }
}

impl Charset {
    pub const UTF8MB4: Charset = Charset {
        name: "utf8mb4",
        layout: Layout::Utf8,
        encoding: None,
    };
    pub const UTF8MB3: Charset = Charset {
        name: "utf8mb3",
        layout: Layout::Utf8,
        encoding: None,
    };
    pub const LATIN1: Charset = Charset {
        name: "latin1",
        layout: Layout::SingleByte,
        encoding: Some(encoding_rs::WINDOWS_1252),
    };
    pub const BINARY: Charset = Charset {
        name: "binary",
        layout: Layout::SingleByte,
        encoding: None,
    };

    /// The character set of a handshake collation id. Unknown ids are taken as utf8mb4,
    /// which is what MariaDB does for collations it does not know.
    pub fn from_collation(id: u8) -> Charset {
        let name = match id {
            1 | 84 => "big5",
            3 | 69 => "dec8",
            4 | 80 => "cp850",
            6 | 72 => "hp8",
            7 | 74 => "koi8r",
            5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 => "latin1",
            2 | 9 | 21 | 27 | 77 => "latin2",
            10 | 82 => "swe7",
            11 | 65 => "ascii",
            12 | 91 => "ujis",
            13 | 88 => "sjis",
            16 | 71 => "hebrew",
            18 | 89 => "tis620",
            19 | 85 => "euckr",
            22 | 75 => "koi8u",
            24 | 86 => "gb2312",
            25 | 70 => "greek",
            26 | 34 | 44 | 66 | 99 => "cp1250",
            28 | 87 => "gbk",
            30 | 78 => "latin5",
            32 | 64 => "armscii8",
            33 | 76 | 83 | 192..=215 | 223 => "utf8mb3",
            36 | 68 => "cp866",
            37 | 73 => "keybcs2",
            38 | 43 => "macce",
            39 | 53 => "macroman",
            40 | 81 => "cp852",
            20 | 41 | 42 | 79 => "latin7",
            14 | 23 | 50 | 51 | 52 => "cp1251",
            57 | 67 => "cp1256",
            29 | 58 | 59 => "cp1257",
            63 => "binary",
            92 | 93 => "geostd8",
            95 | 96 => "cp932",
            97 | 98 => "eucjpms",
            248..=250 => "gb18030",
            _ => "utf8mb4",
        };
        Charset::from_name(name).unwrap_or(Charset::UTF8MB4)
    }

    /// The character set named in `SET NAMES` / `character_set_client` (case-insensitive,
    /// quotes allowed). None for a name MySQL would refuse as a client character set.
    pub fn from_name(name: &str) -> Option<Charset> {
        let n = name
            .trim()
            .trim_matches(|c| c == '\'' || c == '"' || c == '`')
            .to_ascii_lowercase();
        use encoding_rs as e;
        let (name, layout, encoding): (&'static str, Layout, Option<&'static e::Encoding>) =
            match n.as_str() {
                "utf8mb4" => return Some(Charset::UTF8MB4),
                "utf8" | "utf8mb3" => return Some(Charset::UTF8MB3),
                "latin1" => return Some(Charset::LATIN1),
                "binary" => return Some(Charset::BINARY),
                "ascii" => ("ascii", Layout::SingleByte, Some(e::WINDOWS_1252)),
                "big5" => ("big5", Layout::Big5, Some(e::BIG5)),
                "gbk" => ("gbk", Layout::Gbk, Some(e::GBK)),
                "gb2312" => ("gb2312", Layout::SingleByte, Some(e::GBK)),
                "gb18030" => ("gb18030", Layout::Gb18030, Some(e::GB18030)),
                "sjis" => ("sjis", Layout::Sjis, Some(e::SHIFT_JIS)),
                "cp932" => ("cp932", Layout::Sjis, Some(e::SHIFT_JIS)),
                "euckr" => ("euckr", Layout::EucKr, Some(e::EUC_KR)),
                "ujis" => ("ujis", Layout::SingleByte, Some(e::EUC_JP)),
                "eucjpms" => ("eucjpms", Layout::SingleByte, Some(e::EUC_JP)),
                "latin2" => ("latin2", Layout::SingleByte, Some(e::ISO_8859_2)),
                "latin5" => ("latin5", Layout::SingleByte, Some(e::WINDOWS_1254)),
                "latin7" => ("latin7", Layout::SingleByte, Some(e::ISO_8859_13)),
                "greek" => ("greek", Layout::SingleByte, Some(e::ISO_8859_7)),
                "hebrew" => ("hebrew", Layout::SingleByte, Some(e::ISO_8859_8)),
                "koi8r" => ("koi8r", Layout::SingleByte, Some(e::KOI8_R)),
                "koi8u" => ("koi8u", Layout::SingleByte, Some(e::KOI8_U)),
                "cp1250" => ("cp1250", Layout::SingleByte, Some(e::WINDOWS_1250)),
                "cp1251" => ("cp1251", Layout::SingleByte, Some(e::WINDOWS_1251)),
                "cp1256" => ("cp1256", Layout::SingleByte, Some(e::WINDOWS_1256)),
                "cp1257" => ("cp1257", Layout::SingleByte, Some(e::WINDOWS_1257)),
                "cp866" => ("cp866", Layout::SingleByte, Some(e::IBM866)),
                "macroman" => ("macroman", Layout::SingleByte, Some(e::MACINTOSH)),
                "tis620" => ("tis620", Layout::SingleByte, Some(e::WINDOWS_874)),
                // Character sets MySQL knows but encoding_rs does not: lexed correctly,
                // routed by their raw bytes.
                "dec8" => ("dec8", Layout::SingleByte, None),
                "cp850" => ("cp850", Layout::SingleByte, None),
                "cp852" => ("cp852", Layout::SingleByte, None),
                "hp8" => ("hp8", Layout::SingleByte, None),
                "swe7" => ("swe7", Layout::SingleByte, None),
                "armscii8" => ("armscii8", Layout::SingleByte, None),
                "keybcs2" => ("keybcs2", Layout::SingleByte, None),
                "macce" => ("macce", Layout::SingleByte, None),
                "geostd8" => ("geostd8", Layout::SingleByte, None),
                // ucs2, utf16, utf32 cannot be client character sets.
                _ => return None,
            };
        Some(Charset {
            name,
            layout,
            encoding,
        })
    }

    /// Bytes of the character starting `b[0]`: more than 1 only for a complete, valid
    /// multi-byte character of a layout whose trail bytes can look like ASCII.
    fn mb_len(&self, b: &[u8]) -> usize {
        let lead = b[0];
        let at = |i: usize| b.get(i).copied();
        let two = |lead_ok: bool, trail_ok: fn(u8) -> bool| -> usize {
            match at(1) {
                Some(t) if lead_ok && trail_ok(t) => 2,
                _ => 1,
            }
        };
        match self.layout {
            Layout::Utf8 | Layout::SingleByte => 1,
            Layout::Big5 => two((0xA1..=0xF9).contains(&lead), |t| {
                (0x40..=0x7E).contains(&t) || (0xA1..=0xFE).contains(&t)
            }),
            Layout::Gbk => two((0x81..=0xFE).contains(&lead), |t| {
                (0x40..=0x7E).contains(&t) || (0x80..=0xFE).contains(&t)
            }),
            Layout::Sjis => two(
                (0x81..=0x9F).contains(&lead) || (0xE0..=0xFC).contains(&lead),
                |t| (0x40..=0x7E).contains(&t) || (0x80..=0xFC).contains(&t),
            ),
            Layout::EucKr => two((0x81..=0xFE).contains(&lead), |t| {
                t.is_ascii_alphabetic() || (0x81..=0xFE).contains(&t)
            }),
            Layout::Gb18030 => {
                let lead_ok = (0x81..=0xFE).contains(&lead);
                match (at(1), at(2), at(3)) {
                    (Some(b1), Some(b2), Some(b3))
                        if lead_ok
                            && b1.is_ascii_digit()
                            && (0x81..=0xFE).contains(&b2)
                            && b3.is_ascii_digit() =>
                    {
                        4
                    }
                    _ => two(lead_ok, |t| {
                        (0x40..=0x7E).contains(&t) || (0x80..=0xFE).contains(&t)
                    }),
                }
            }
        }
    }

    /// Whether text in this character set is UTF-8 already (no conversion for routing).
    pub fn is_utf8(&self) -> bool {
        self.layout == Layout::Utf8
    }

    /// Text of this character set as UTF-8: what a utf8mb4 column stores for it. Bytes
    /// that are not valid in the character set (or a set without a known mapping) are
    /// returned unchanged.
    pub fn to_utf8<'a>(&self, raw: &'a [u8]) -> Cow<'a, [u8]> {
        if raw.is_ascii() {
            return Cow::Borrowed(raw);
        }
        match self.encoding {
            None => Cow::Borrowed(raw),
            Some(enc) => match enc.decode_without_bom_handling_and_without_replacement(raw) {
                Some(Cow::Borrowed(s)) => Cow::Borrowed(s.as_bytes()),
                Some(Cow::Owned(s)) => Cow::Owned(s.into_bytes()),
                None => Cow::Borrowed(raw),
            },
        }
    }
}

/// The escape character standing for byte `b`.
pub fn escape_char(b: u8) -> char {
    char::from_u32(ESCAPE_BASE + b as u32).expect("U+10FF00..U+10FFFF are characters")
}

/// The byte an escape character stands for.
pub fn escaped_byte(c: char) -> Option<u8> {
    let c = c as u32;
    (c >= ESCAPE_BASE).then(|| (c - ESCAPE_BASE) as u8)
}

/// The view of `bytes` sent by a client using `cs`: borrowed when the bytes are valid
/// UTF-8 that needs no escaping (the common case: ASCII, or UTF-8 from a UTF-8 client).
pub fn decode(bytes: &[u8], cs: Charset) -> Cow<'_, str> {
    if cs.layout == Layout::Utf8 || bytes.is_ascii() {
        if let Ok(s) = std::str::from_utf8(bytes) {
            if !bytes.contains(&ESCAPE_LEAD) {
                return Cow::Borrowed(s);
            }
        }
    }
    let mut out = String::with_capacity(bytes.len() + bytes.len() / 2);
    if cs.layout == Layout::Utf8 {
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                if escaped_byte(c).is_some() {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push(escape_char(b));
                    }
                } else {
                    out.push(c);
                }
            }
            for &b in chunk.invalid() {
                out.push(escape_char(b));
            }
        }
        return Cow::Owned(out);
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let n = cs.mb_len(&bytes[i..]);
        if n == 1 && b < 0x80 {
            out.push(b as char);
        } else {
            for &x in &bytes[i..i + n] {
                out.push(escape_char(x));
            }
        }
        i += n;
    }
    Cow::Owned(out)
}

/// The view of bytes that are UTF-8 by protocol (column names, error messages, values
/// the proxy decodes for its own use), escaping whatever is not.
pub fn decode_utf8(bytes: &[u8]) -> Cow<'_, str> {
    decode(bytes, Charset::UTF8MB4)
}

/// The exact bytes of a view: escape characters become their bytes, everything else is
/// UTF-8. Borrowed when the view has no escapes.
pub fn encode(view: &str) -> Cow<'_, [u8]> {
    if !view.as_bytes().contains(&ESCAPE_LEAD) {
        return Cow::Borrowed(view.as_bytes());
    }
    let mut out = Vec::with_capacity(view.len());
    for c in view.chars() {
        match escaped_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Cow::Owned(out)
}

/// Whether a view holds escaped bytes (and so is not plain text).
pub fn has_escapes(view: &str) -> bool {
    view.as_bytes().contains(&ESCAPE_LEAD) && view.chars().any(|c| escaped_byte(c).is_some())
}

/// A view for logs and messages: escaped bytes shown as `\xNN`.
pub fn display(view: &str) -> Cow<'_, str> {
    if !has_escapes(view) {
        return Cow::Borrowed(view);
    }
    let mut out = String::with_capacity(view.len());
    for c in view.chars() {
        match escaped_byte(c) {
            Some(b) => out.push_str(&format!("\\x{b:02X}")),
            None => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SETS: &[&str] = &[
        "utf8mb4", "latin1", "gbk", "big5", "sjis", "cp932", "gb18030", "euckr", "ujis", "binary",
        "cp1251",
    ];

    #[test]
    fn utf8_text_is_borrowed_and_invalid_bytes_escaped() {
        assert!(matches!(
            decode(b"SELECT 1", Charset::UTF8MB4),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            decode("SELECT 'é'".as_bytes(), Charset::UTF8MB4),
            Cow::Borrowed(_)
        ));
        let v = decode(b"'a\xff\xfe'", Charset::UTF8MB4);
        assert_eq!(v.chars().count(), 5);
        assert_eq!(&*encode(&v), b"'a\xff\xfe'");
        // A character of the escape range sent as UTF-8 is escaped byte by byte.
        let raw = "x\u{10FF41}y".as_bytes();
        let v = decode(raw, Charset::UTF8MB4);
        assert_eq!(v.chars().count(), 6);
        assert_eq!(&*encode(&v), raw);
    }

    #[test]
    fn trail_bytes_that_look_like_backslash_are_not_backslashes() {
        for (cs, ch) in [
            ("gbk", &b"\x81\x5c"[..]),
            ("sjis", b"\x95\x5c"),
            ("big5", b"\xa5\x5c"),
            ("gb18030", b"\x81\x30\x81\x30"),
        ] {
            let cs = Charset::from_name(cs).unwrap();
            let mut sql = b"SELECT '".to_vec();
            sql.extend_from_slice(ch);
            sql.extend_from_slice(b"'");
            let v = decode(&sql, cs);
            assert!(!v[8..].contains('\\'), "{}: {v:?}", cs.name);
            assert!(v.ends_with('\''));
            assert_eq!(&*encode(&v), &sql[..]);
        }
        // In latin1, 0x5C is a backslash like in ASCII.
        let v = decode(b"'\xe9\\'", Charset::LATIN1);
        assert!(v.contains('\\'));
    }

    #[test]
    fn collations_map_to_character_sets() {
        assert_eq!(Charset::from_collation(45), Charset::UTF8MB4);
        assert_eq!(Charset::from_collation(33).name, "utf8mb3");
        assert_eq!(Charset::from_collation(8), Charset::LATIN1);
        assert_eq!(Charset::from_collation(28).layout, Layout::Gbk);
        assert_eq!(Charset::from_collation(95).layout, Layout::Sjis);
        assert_eq!(Charset::from_collation(63), Charset::BINARY);
        assert!(Charset::from_name("ucs2").is_none());
        assert_eq!(Charset::from_name("'UTF8'").unwrap().name, "utf8mb3");
    }

    #[test]
    fn routing_text_is_what_a_utf8mb4_column_stores() {
        assert_eq!(&*Charset::LATIN1.to_utf8(b"\xe9"), "é".as_bytes());
        let gbk = Charset::from_name("gbk").unwrap();
        assert_eq!(&*gbk.to_utf8(b"\xd6\xd0"), "中".as_bytes());
        assert_eq!(&*Charset::BINARY.to_utf8(b"\xe9"), b"\xe9");
        assert_eq!(&*Charset::UTF8MB4.to_utf8(b"\xff"), b"\xff");
    }

    proptest! {
        #[test]
        fn encode_reverses_decode(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                  set in 0..SETS.len()) {
            let cs = Charset::from_name(SETS[set]).unwrap();
            let v = decode(&bytes, cs);
            prop_assert_eq!(&*encode(&v), &bytes[..]);
            // ASCII structure survives: every ASCII character of the view is a byte the
            // client sent outside any multi-byte character.
            prop_assert!(v.chars().filter(char::is_ascii).count() <= bytes.len());
        }

        #[test]
        fn strings_round_trip(s in "\\PC*") {
            let v = decode(s.as_bytes(), Charset::UTF8MB4);
            prop_assert_eq!(&*encode(&v), s.as_bytes());
        }
    }
}
