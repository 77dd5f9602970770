//! Keyspace ids and key ranges, with Vitess semantics.
//!
//! A keyspace id is a byte string (8 bytes for the hash vindexes). A key range is the
//! half-open interval `[start, end)` of keyspace ids; an empty bound is unbounded. Shards
//! are named by their range in hex: `-80`, `80-c0`, `c0-`, and `-` (or Vitess's `0`) for
//! everything. Trailing zero bytes do not count: `80`, `8000` and `8000000000000000` are
//! the same boundary, so comparisons pad the shorter side with zeros.

use std::cmp::Ordering;
use std::fmt;

/// The value a vindex maps a row to; it decides the shard.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyspaceId(pub Vec<u8>);

impl KeyspaceId {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses lower- or upper-case hex.
    pub fn from_hex(s: &str) -> Option<KeyspaceId> {
        unhex(s).map(KeyspaceId)
    }
}

impl fmt::Debug for KeyspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyspaceId({})", self.hex())
    }
}

impl fmt::Display for KeyspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// A half-open range of keyspace ids. Bounds are stored without trailing zero bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyRange {
    start: Vec<u8>,
    end: Vec<u8>,
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// Compares two keyspace ids as if the shorter were padded with zero bytes.
pub fn compare_ids(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        match x.cmp(&y) {
            Ordering::Equal => continue,
            o => return o,
        }
    }
    Ordering::Equal
}

impl KeyRange {
    /// The whole keyspace.
    pub fn full() -> KeyRange {
        KeyRange {
            start: Vec::new(),
            end: Vec::new(),
        }
    }

    /// A range from raw bounds (empty = unbounded). `None` if `start >= end`.
    pub fn new(start: Vec<u8>, end: Vec<u8>) -> Option<KeyRange> {
        let start = strip_zeros(start);
        let end = strip_zeros(end);
        if !end.is_empty() && compare_ids(&start, &end) != Ordering::Less {
            return None;
        }
        Some(KeyRange { start, end })
    }

    /// Parses a shard name: `-`, `0`, `-80`, `80-c0`, `c0-`. Hex parts have an even
    /// number of digits and the start must be below the end.
    pub fn parse(name: &str) -> Result<KeyRange, String> {
        if name == "0" || name == "-" {
            return Ok(KeyRange::full());
        }
        let Some((a, b)) = name.split_once('-') else {
            return Err(format!(
                "shard name {name:?} is not a key range (expected forms like -80, 80-c0, c0- or -)"
            ));
        };
        let parse_part = |p: &str| -> Result<Vec<u8>, String> {
            if !p.len().is_multiple_of(2) {
                return Err(format!(
                    "shard name {name:?}: {p:?} must have an even number of hex digits"
                ));
            }
            unhex(p).ok_or_else(|| format!("shard name {name:?}: {p:?} is not hex"))
        };
        let start = parse_part(a)?;
        let end = parse_part(b)?;
        KeyRange::new(start, end)
            .ok_or_else(|| format!("shard name {name:?}: the start must be below the end"))
    }

    pub fn start(&self) -> &[u8] {
        &self.start
    }

    pub fn end(&self) -> &[u8] {
        &self.end
    }

    pub fn is_full(&self) -> bool {
        self.start.is_empty() && self.end.is_empty()
    }

    /// Whether `id` falls in `[start, end)`.
    pub fn contains(&self, id: &[u8]) -> bool {
        (self.start.is_empty() || compare_ids(id, &self.start) != Ordering::Less)
            && (self.end.is_empty() || compare_ids(id, &self.end) == Ordering::Less)
    }

    /// Whether the two ranges share any keyspace id.
    pub fn intersects(&self, other: &KeyRange) -> bool {
        let a_before_b_ends =
            other.end.is_empty() || compare_ids(&self.start, &other.end) == Ordering::Less;
        let b_before_a_ends =
            self.end.is_empty() || compare_ids(&other.start, &self.end) == Ordering::Less;
        a_before_b_ends && b_before_a_ends
    }

    /// Whether `other` lies entirely inside this range.
    pub fn contains_range(&self, other: &KeyRange) -> bool {
        let start_ok =
            self.start.is_empty() || compare_ids(&other.start, &self.start) != Ordering::Less;
        let end_ok = self.end.is_empty()
            || (!other.end.is_empty() && compare_ids(&other.end, &self.end) != Ordering::Greater);
        start_ok && end_ok
    }

    /// The canonical shard name (`-` for the full range).
    pub fn name(&self) -> String {
        format!("{}-{}", hex(&self.start), hex(&self.end))
    }

    fn order_key(&self) -> &[u8] {
        &self.start
    }
}

impl fmt::Debug for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRange({})", self.name())
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Checks that `parts` cover `whole` exactly: no gap, no overlap. The error names the
/// first problem found, with shard names.
pub fn check_partition(whole: &KeyRange, parts: &[KeyRange]) -> Result<(), String> {
    if parts.is_empty() {
        return Err(format!("no shards cover {}", whole.name()));
    }
    let mut sorted: Vec<&KeyRange> = parts.iter().collect();
    sorted.sort_by(|a, b| {
        if a.order_key().is_empty() && b.order_key().is_empty() {
            Ordering::Equal
        } else {
            compare_ids(a.order_key(), b.order_key())
        }
    });
    let mut cursor: Vec<u8> = whole.start.clone();
    let mut open_end = false;
    for (i, r) in sorted.iter().enumerate() {
        if open_end {
            return Err(format!(
                "shards {} and {} overlap",
                sorted[i - 1].name(),
                r.name()
            ));
        }
        match compare_ids(&r.start, &cursor) {
            Ordering::Greater => {
                return Err(format!(
                    "key range gap: nothing covers {}-{}",
                    hex(&cursor),
                    hex(&r.start)
                ))
            }
            Ordering::Less => {
                let prev = if i == 0 {
                    whole.name()
                } else {
                    sorted[i - 1].name()
                };
                return Err(if i == 0 {
                    format!("shard {} starts before {}", r.name(), prev)
                } else {
                    format!("shards {} and {} overlap", prev, r.name())
                });
            }
            Ordering::Equal => {}
        }
        if r.end.is_empty() {
            open_end = true;
        } else {
            cursor = r.end.clone();
        }
    }
    if whole.end.is_empty() {
        if !open_end {
            return Err(format!("key range gap: nothing covers {}-", hex(&cursor)));
        }
    } else if open_end || compare_ids(&cursor, &whole.end) != Ordering::Equal {
        return Err(format!(
            "shards do not end exactly at {} (they reach {})",
            hex(&whole.end),
            if open_end {
                "the end".to_string()
            } else {
                hex(&cursor)
            }
        ));
    }
    Ok(())
}

/// Splits the full range into `n` shards with even boundaries (`n` a power of two up to
/// 256 gives Vitess's usual names: 2 -> `-80`, `80-`).
pub fn even_ranges(n: usize) -> Vec<KeyRange> {
    if n <= 1 {
        return vec![KeyRange::full()];
    }
    let width: u64 = if n <= 256 { 1 } else { 2 };
    let space: u64 = 1 << (8 * width);
    (0..n)
        .map(|i| {
            let bound = |k: usize| -> Vec<u8> {
                if k == 0 || k == n {
                    return Vec::new();
                }
                let v = (k as u64 * space) / n as u64;
                v.to_be_bytes()[(8 - width as usize)..].to_vec()
            };
            KeyRange::new(bound(i), bound(i + 1)).expect("even ranges are ordered")
        })
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> KeyRange {
        KeyRange::parse(s).unwrap()
    }

    #[test]
    fn parses_vitess_shard_names() {
        assert!(r("-").is_full());
        assert!(r("0").is_full());
        assert_eq!(r("-80").name(), "-80");
        assert_eq!(r("80-C0").name(), "80-c0");
        assert_eq!(r("8000-c000").name(), "80-c0");
        assert!(KeyRange::parse("c0-80").is_err());
        assert!(KeyRange::parse("8-").is_err());
        assert!(KeyRange::parse("zz-").is_err());
        assert!(KeyRange::parse("shard1").is_err());
        assert!(KeyRange::parse("80-80").is_err());
    }

    #[test]
    fn contains_is_half_open_and_ignores_trailing_zeros() {
        let lo = r("-80");
        let hi = r("80-");
        let boundary = [0x80, 0, 0, 0, 0, 0, 0, 0];
        assert!(hi.contains(&boundary));
        assert!(!lo.contains(&boundary));
        assert!(lo.contains(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
        assert!(hi.contains(&[0x80]));
        assert!(r("-").contains(&[]));
        assert!(r("80-c0").contains(&[0xbf, 0xff]));
        assert!(!r("80-c0").contains(&[0xc0]));
    }

    #[test]
    fn partition_check_names_gaps_and_overlaps() {
        let full = KeyRange::full();
        assert!(check_partition(&full, &[r("-80"), r("80-")]).is_ok());
        assert!(check_partition(&full, &[r("c0-"), r("-80"), r("80-c0")]).is_ok());
        assert!(check_partition(&full, &[r("-")]).is_ok());
        let e = check_partition(&full, &[r("-80"), r("c0-")]).unwrap_err();
        assert!(e.contains("gap") && e.contains("80-c0"), "{e}");
        let e = check_partition(&full, &[r("-80"), r("40-")]).unwrap_err();
        assert!(e.contains("overlap"), "{e}");
        let e = check_partition(&full, &[r("-80")]).unwrap_err();
        assert!(e.contains("gap"), "{e}");
        assert!(check_partition(&full, &[r("-"), r("80-")]).is_err());
        assert!(check_partition(&r("80-"), &[r("80-c0"), r("c0-")]).is_ok());
        assert!(check_partition(&r("80-"), &[r("80-c0")]).is_err());
        assert!(check_partition(&r("-80"), &[r("-40"), r("40-80")]).is_ok());
        assert!(check_partition(&r("-80"), &[r("-40"), r("40-")]).is_err());
    }

    #[test]
    fn intersections_and_containment() {
        assert!(r("-80").intersects(&r("40-c0")));
        assert!(!r("-80").intersects(&r("80-")));
        assert!(r("80-").contains_range(&r("80-c0")));
        assert!(r("80-").contains_range(&r("c0-")));
        assert!(!r("80-c0").contains_range(&r("c0-")));
        assert!(r("-").contains_range(&r("-80")));
    }

    #[test]
    fn even_ranges_use_vitess_names() {
        let names: Vec<String> = even_ranges(4).iter().map(|r| r.name()).collect();
        assert_eq!(names, vec!["-40", "40-80", "80-c0", "c0-"]);
        assert_eq!(even_ranges(1)[0].name(), "-");
        assert!(check_partition(&KeyRange::full(), &even_ranges(3)).is_ok());
    }
}
