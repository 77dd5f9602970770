#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/): well-formed inputs
the fuzzers mutate from. Run once; libFuzzer adds what it finds next to them."""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def packet(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def lenenc(b):
    assert len(b) < 251
    return bytes([len(b)]) + b


# sql: the first byte picks the character set.
SQL = [
    b"SELECT 1",
    b"SELECT * FROM customer WHERE id = 5",
    b"SELECT name FROM customer WHERE id IN (1, 2, 3) ORDER BY name LIMIT 2",
    b"SELECT COUNT(*), name FROM customer GROUP BY name HAVING COUNT(*) > 1",
    b"INSERT INTO customer (id, name) VALUES (1, 'a'), (2, 'b\\'c')",
    b"UPDATE customer SET name = 'x' WHERE id = ?",
    b"DELETE FROM orders WHERE id IN (SELECT id FROM customer WHERE id = 3)",
    b"/*!40101 SET NAMES utf8mb4 */; /*!40000 ALTER TABLE customer DISABLE KEYS */",
    b"SET @sg_replicating = 1",
    b"EXPLAIN FORMAT=shardgate SELECT * FROM names WHERE name = _latin1'\xe9'",
    b"SELECT 'caf\xc3\xa9' AS caf\xc3\xa9, `x``y`, \"q\"\"q\" -- c\n# d\n",
    b"SELECT '\x81\x5c' FROM region",
    b"BEGIN; SAVEPOINT a; ROLLBACK TO a; COMMIT",
    b"CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(3))",
    b"SELECT * FROM customer c JOIN orders o ON c.id = o.id WHERE c.id = 7",
]
for i, s in enumerate(SQL):
    put("sql", f"seed{i:02}", bytes([i % 9]) + s)

# client: a handshake response for root without a password, then commands.
caps = 0x00000200 | 0x00008000 | 0x00080000 | 0x00010000 | 0x00020000 | 0x01000000
resp = struct.pack("<IIB", caps, 1 << 24, 45) + bytes(23) + b"root\x00" + b"\x00" + b"mysql_native_password\x00"
commands = [
    b"\x03SELECT 1",
    b"\x0e",
    b"\x16SELECT ?",
    b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x08\x00\x05\x00\x00\x00\x00\x00\x00\x00",
    b"\x18\x01\x00\x00\x00\x00\x00long data",
    b"\x1b\x00\x00",
    b"\x02commerce",
    b"\x04t\x00%",
    b"\x09",
    b"\x11",
    b"\x1f",
    b"\x01",
]
put("client", "handshake_only", packet(1, resp))
stream = packet(1, resp)
for c in commands:
    stream += packet(0, c)
put("client", "session", stream)
put("client", "ssl_request", packet(1, struct.pack("<IIB", caps | 0x800, 1 << 24, 45) + bytes(23)))

# packets: payloads of each kind.
ok = b"\x00\x01\x00\x02\x00\x00\x00"
err = b"\xff\x7a\x04#42S02Table 'x.y' doesn't exist"
col = lenenc(b"def") + lenenc(b"db") + lenenc(b"t") + lenenc(b"t") + lenenc(b"name") + lenenc(b"name") + b"\x0c\x2d\x00\x00\x01\x00\x00\xfd\x00\x00\x00\x00\x00"
greet = b"\x0a10.11.6-MariaDB\x00\x01\x00\x00\x00abcdefgh\x00\xff\xf7\x2d\x02\x00\xff\x81\x15" + bytes(10) + b"ijklmnopqrst\x00mysql_native_password\x00"
for name, data in [("ok", ok), ("err", err), ("col", col), ("greeting", greet), ("response", resp),
                   ("switch", b"\xfemysql_native_password\x00abcdefghijklmnopqrst\x00"), ("eof", b"\xfe\x00\x00\x02\x00")]:
    put("packets", name, data)

# execute: parameter count byte, then the payload after the command byte.
put("execute", "two", b"\x02" + b"\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x08\x00\xfd\x00"
    + struct.pack("<q", 42) + lenenc(b"it's \\ \xe9"))
put("execute", "null", b"\x01" + b"\x01\x00\x00\x00\x00\x01\x00\x00\x00\x01\x01\x06\x00")
put("execute", "decimal", b"\x01" + b"\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\xf6\x00" + lenenc(b"1.5"))
put("execute", "datetime", b"\x01" + b"\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x0c\x00\x07\xe8\x07\x03\x09\x0a\x0b\x0c")
put("execute", "blob", b"\x01" + b"\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\xfc\x00" + lenenc(b"\x00\xff'"))

# relay: flags byte (1 DEPRECATE_EOF, 2 more results, 4 rows only), then a backend's packets.
rs = packet(1, b"\x02") + packet(2, col) + packet(3, col) + packet(4, lenenc(b"a") + b"\xfb") + packet(5, lenenc(b"b") + lenenc(b"c")) + packet(6, b"\xfe\x00\x00\x02\x00\x00\x00")
put("relay", "ok", b"\x01" + packet(1, ok))
put("relay", "err", b"\x00" + packet(1, err))
put("relay", "resultset", b"\x01" + rs)
put("relay", "resultset_more", b"\x03" + rs + packet(1, ok))
put("relay", "rows_only", b"\x05" + packet(4, lenenc(b"a") + b"\xfb") + packet(5, b"\xfe\x00\x00\x02\x00\x00\x00"))
print("seeds written under", ROOT)
