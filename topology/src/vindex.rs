//! Vindexes: functions from a column value to keyspace ids, bit-compatible with Vitess.
//!
//! * `hash`: the value as a big-endian u64, encrypted as one DES block under an all-zero
//!   key. Signed integers are reinterpreted as u64; strings must spell a non-negative
//!   integer; anything else maps to no shard.
//! * `xxhash`: XXH64 (seed 0) of the value's MySQL text form, written little-endian.
//! * `numeric`: the u64 itself, big-endian. `reverse_bits`: its bits reversed.
//! * `binary`: the value's bytes unchanged.
//! * `lookup_unique`: a backing table maps the column to the keyspace id; mapping needs a
//!   query, so the planner emits a lookup step and the engine runs it.
//!
//! `map` is pure: it never does I/O. `Ok(None)` means the value cannot belong to any row
//! (a string that is not a number, for `hash`), so a query on it touches no shard.

use crate::keyrange::KeyspaceId;
use des::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use std::collections::BTreeMap;

/// A value from SQL text or a bound parameter, as a vindex sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    /// An exact decimal literal such as `1.50`.
    Decimal(String),
    /// A string or binary literal.
    Bytes(Vec<u8>),
}

impl SqlValue {
    /// The MySQL text form (what `xxhash` and `binary` hash).
    pub fn text_bytes(&self) -> Vec<u8> {
        match self {
            SqlValue::Null => Vec::new(),
            SqlValue::Int(i) => i.to_string().into_bytes(),
            SqlValue::UInt(u) => u.to_string().into_bytes(),
            SqlValue::Float(f) => f.to_string().into_bytes(),
            SqlValue::Decimal(d) => d.clone().into_bytes(),
            SqlValue::Bytes(b) => b.clone(),
        }
    }

    /// Vitess's ToUint64: unsigned as is, non-negative integers, integer text; else None.
    fn to_u64(&self) -> Option<u64> {
        match self {
            SqlValue::Int(i) => u64::try_from(*i).ok(),
            SqlValue::UInt(u) => Some(*u),
            SqlValue::Decimal(d) => parse_uint_text(d.as_bytes()),
            SqlValue::Bytes(b) => parse_uint_text(b),
            SqlValue::Null | SqlValue::Float(_) => None,
        }
    }
}

fn parse_uint_text(b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?;
    if let Ok(i) = s.parse::<i64>() {
        return u64::try_from(i).ok();
    }
    s.parse::<u64>().ok()
}

/// The kinds of vindex shardgate implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VindexKind {
    Hash,
    Xxhash,
    Numeric,
    ReverseBits,
    Binary,
    LookupUnique(LookupSpec),
}

/// Where a lookup vindex keeps its mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupSpec {
    /// Backing table, `ks.table` or `table` (same keyspace as the vindex's owner).
    pub table: String,
    /// Column holding the looked-up value.
    pub from: String,
    /// Column holding the keyspace id (VARBINARY).
    pub to: String,
    /// Rows whose value is NULL get no mapping row instead of an error.
    pub ignore_nulls: bool,
    /// While the table is being back-filled, reads scatter instead of trusting it.
    pub write_only: bool,
}

/// A configured vindex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vindex {
    pub name: String,
    pub kind: VindexKind,
    /// The table whose writes maintain this vindex (lookup vindexes only).
    pub owner: Option<String>,
}

/// Vindex type names accepted in VSchema documents.
pub const KNOWN_TYPES: &[&str] = &[
    "hash",
    "xxhash",
    "numeric",
    "reverse_bits",
    "binary",
    "lookup_unique",
];

impl Vindex {
    /// Builds a vindex from its VSchema spec; the error says what is wrong.
    pub fn from_spec(
        name: &str,
        type_name: &str,
        params: &BTreeMap<String, String>,
        owner: &str,
    ) -> Result<Vindex, String> {
        let kind = match type_name {
            "hash" => VindexKind::Hash,
            "xxhash" => VindexKind::Xxhash,
            "numeric" => VindexKind::Numeric,
            "reverse_bits" => VindexKind::ReverseBits,
            "binary" => VindexKind::Binary,
            "lookup_unique" | "consistent_lookup_unique" => {
                let get = |k: &str| -> Result<String, String> {
                    params
                        .get(k)
                        .filter(|v| !v.is_empty())
                        .cloned()
                        .ok_or_else(|| format!("lookup vindex {name:?} needs params.{k}"))
                };
                let flag = |k: &str| -> Result<bool, String> {
                    match params.get(k).map(String::as_str) {
                        None | Some("false") => Ok(false),
                        Some("true") => Ok(true),
                        Some(v) => Err(format!(
                            "vindex {name:?}: params.{k} must be \"true\" or \"false\", not {v:?}"
                        )),
                    }
                };
                let table = get("table")?;
                let from = get("from")?;
                if from.contains(',') {
                    return Err(format!(
                        "vindex {name:?}: lookup_unique over several columns is not supported"
                    ));
                }
                VindexKind::LookupUnique(LookupSpec {
                    table,
                    from,
                    to: get("to")?,
                    ignore_nulls: flag("ignore_nulls")?,
                    write_only: flag("write_only")?,
                })
            }
            "unicode_loose_xxhash" | "unicode_loose_md5" | "binary_md5" | "region_json"
            | "region_experimental" | "cfc" | "lookup" | "consistent_lookup" => {
                return Err(format!(
                    "vindex {name:?}: type {type_name:?} is not supported by shardgate yet (supported: {})",
                    KNOWN_TYPES.join(", ")
                ))
            }
            other => {
                return Err(format!(
                    "vindex {name:?}: unknown vindex type {other:?} (supported: {})",
                    KNOWN_TYPES.join(", ")
                ))
            }
        };
        Ok(Vindex {
            name: name.to_string(),
            kind,
            owner: (!owner.is_empty()).then(|| owner.to_string()),
        })
    }

    /// True when mapping needs no query (everything but lookups).
    pub fn is_functional(&self) -> bool {
        !matches!(self.kind, VindexKind::LookupUnique(_))
    }

    /// Maps a value to its keyspace id without I/O. `Ok(None)`: no row can have this
    /// value. Lookup vindexes return an error here; the engine maps them with a query.
    pub fn map(&self, value: &SqlValue) -> Result<Option<KeyspaceId>, String> {
        Ok(match &self.kind {
            VindexKind::Hash => {
                let n = match value {
                    SqlValue::Int(i) => Some(*i as u64),
                    other => other.to_u64(),
                };
                n.map(|n| KeyspaceId(des_encrypt(n).to_vec()))
            }
            VindexKind::Xxhash => {
                let h = xxhash_rust::xxh64::xxh64(&value.text_bytes(), 0);
                Some(KeyspaceId(h.to_le_bytes().to_vec()))
            }
            VindexKind::Numeric => value.to_u64().map(|n| KeyspaceId(n.to_be_bytes().to_vec())),
            VindexKind::ReverseBits => value
                .to_u64()
                .map(|n| KeyspaceId(n.reverse_bits().to_be_bytes().to_vec())),
            VindexKind::Binary => match value {
                SqlValue::Null => None,
                v => Some(KeyspaceId(v.text_bytes())),
            },
            VindexKind::LookupUnique(_) => {
                return Err(format!("vindex {} needs a lookup query", self.name))
            }
        })
    }

    /// The backing table spec of a lookup vindex.
    pub fn lookup(&self) -> Option<&LookupSpec> {
        match &self.kind {
            VindexKind::LookupUnique(l) => Some(l),
            _ => None,
        }
    }
}

fn des_encrypt(n: u64) -> [u8; 8] {
    // The key schedule is the same for every value: compute it once.
    static CIPHER: std::sync::OnceLock<des::Des> = std::sync::OnceLock::new();
    let cipher = CIPHER.get_or_init(|| {
        des::Des::new_from_slice(&[0u8; 8]).expect("an 8-byte key is valid for DES")
    });
    let mut block = GenericArray::clone_from_slice(&n.to_be_bytes());
    cipher.encrypt_block(&mut block);
    let mut out = [0u8; 8];
    out.copy_from_slice(&block);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &str) -> Vindex {
        Vindex::from_spec("v", t, &BTreeMap::new(), "").unwrap()
    }

    fn hex_of(vx: &Vindex, val: SqlValue) -> Option<String> {
        vx.map(&val).unwrap().map(|k| k.hex())
    }

    #[test]
    fn hash_matches_vitess_vectors() {
        let h = v("hash");
        for (n, want) in [
            (1i64, "166b40b44aba4bd6"),
            (2, "06e7ea22ce92708f"),
            (0, "8ca64de9c1b123a7"),
            (11, "aefc44491cfe474c"),
            (29999, "fcd63e56d3374d88"),
            (397, "5584fa738baaf516"),
            (-1, "355550b2150e2451"),
            (i64::MAX, "f77d48aadda1f1bb"),
            (i64::MIN, "95f8a5e5dd31d900"),
        ] {
            assert_eq!(hex_of(&h, SqlValue::Int(n)).as_deref(), Some(want), "{n}");
        }
        assert_eq!(
            hex_of(&h, SqlValue::UInt(u64::MAX)).as_deref(),
            Some("355550b2150e2451")
        );
        assert_eq!(
            hex_of(&h, SqlValue::Bytes(b"29999".to_vec())).as_deref(),
            Some("fcd63e56d3374d88")
        );
        assert_eq!(hex_of(&h, SqlValue::Bytes(b"-1".to_vec())), None);
        assert_eq!(hex_of(&h, SqlValue::Bytes(b"abc".to_vec())), None);
        assert_eq!(hex_of(&h, SqlValue::Decimal("1.5".into())), None);
        assert_eq!(hex_of(&h, SqlValue::Null), None);
    }

    #[test]
    fn xxhash_matches_vitess_vectors() {
        let x = v("xxhash");
        assert_eq!(
            hex_of(&x, SqlValue::Bytes(b"test1".to_vec())).as_deref(),
            Some("d01ab7e4d6978f0b")
        );
        assert_eq!(
            hex_of(
                &x,
                SqlValue::Bytes(b"testaverylongvaluetomakesurethisworks".to_vec())
            )
            .as_deref(),
            Some("81d8c38e0d850e6a")
        );
        assert_eq!(
            hex_of(&x, SqlValue::Int(1)).as_deref(),
            Some("d46405367612b4b7")
        );
        assert_eq!(
            hex_of(&x, SqlValue::Int(-1)).as_deref(),
            Some("d8e2a6a7c8c7623d")
        );
        assert_eq!(
            hex_of(&x, SqlValue::Null).as_deref(),
            Some("99e9d85137db46ef")
        );
        assert_eq!(
            hex_of(&x, SqlValue::UInt(u64::MAX)).as_deref(),
            Some("477cfa8d6d8f1f8d")
        );
    }

    #[test]
    fn numeric_reverse_bits_and_binary() {
        assert_eq!(
            hex_of(&v("numeric"), SqlValue::Int(1)).as_deref(),
            Some("0000000000000001")
        );
        assert_eq!(hex_of(&v("numeric"), SqlValue::Int(-1)), None);
        assert_eq!(hex_of(&v("numeric"), SqlValue::Float(1.1)), None);
        assert_eq!(
            hex_of(&v("reverse_bits"), SqlValue::Int(3)).as_deref(),
            Some("c000000000000000")
        );
        assert_eq!(
            hex_of(&v("binary"), SqlValue::Bytes(vec![0xab, 0x01])).as_deref(),
            Some("ab01")
        );
    }

    #[test]
    fn specs_are_checked() {
        let e = Vindex::from_spec("v", "md5ish", &BTreeMap::new(), "").unwrap_err();
        assert!(e.contains("unknown vindex type"), "{e}");
        let e = Vindex::from_spec("v", "lookup_unique", &BTreeMap::new(), "t").unwrap_err();
        assert!(e.contains("params.table"), "{e}");
        let params: BTreeMap<String, String> = [
            ("table", "commerce.email_idx"),
            ("from", "email"),
            ("to", "keyspace_id"),
            ("write_only", "yes"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let e = Vindex::from_spec("v", "lookup_unique", &params, "t").unwrap_err();
        assert!(e.contains("write_only"), "{e}");
    }
}
