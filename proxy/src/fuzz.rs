//! Entry points for fuzzing: each takes arbitrary bytes and drives one part of the proxy
//! that reads untrusted input. The `cargo fuzz` targets under `fuzz/` call them, and
//! property tests in this crate call them with random input on every `cargo test`, so
//! they stay honest between fuzzing runs. Every entry point must return without
//! panicking, whatever the input; the checks inside assert properties that must hold.
#![doc(hidden)]

use crate::backend::conn::BackendConn;
use crate::backend::relay::{relay_response, relay_rows_only, RelayOptions};
use crate::planner::{self, lexer, sqltext, PlanContext};
use crate::wire::charset::{self, Charset};
use crate::wire::consts::*;
use crate::wire::handshake::{decode_auth_switch, Greeting, HandshakeResponse};
use crate::wire::packets::{status_and_warnings, ColumnDef, ErrPacket, OkPacket};
use crate::wire::params::Execute;
use crate::wire::sha2::{RsaKeys, Sha2Cache};
use crate::wire::{
    Account, ClientInfo, Handler, HandlerResult, NetStream, PacketIo, Responder, Service,
};
use bytes::{Bytes, BytesMut};
use shardgate_config::{PasswordHash, Sha2Hash};
use shardgate_topology::Snapshot;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Character sets the fuzzers pick from (by the first input byte).
const CHARSETS: &[&str] = &[
    "utf8mb4", "latin1", "gbk", "big5", "sjis", "gb18030", "euckr", "binary", "cp1251",
];

fn pick_charset(b: u8) -> Charset {
    Charset::from_name(CHARSETS[b as usize % CHARSETS.len()]).unwrap_or_default()
}

/// Every decoder of protocol packets, on `data` as a payload.
pub fn packets(data: &[u8]) {
    let _ = HandshakeResponse::decode(data);
    let _ = HandshakeResponse::is_ssl_request(data);
    let _ = Greeting::decode(data);
    let _ = decode_auth_switch(data);
    let _ = OkPacket::decode(data);
    let _ = status_and_warnings(data);
    if let Ok(e) = ErrPacket::decode(data) {
        // What the proxy decodes it encodes back unchanged.
        let mut b = BytesMut::new();
        e.encode(&mut b);
        if data.get(3) == Some(&b'#') {
            assert_eq!(&b[..], data);
        }
    }
    if let Ok(c) = ColumnDef::decode(data) {
        let mut b = BytesMut::new();
        c.encode(&mut b);
        let again = ColumnDef::decode(&b).expect("a column definition re-encodes");
        assert_eq!(again, c);
    }
}

/// A COM_STMT_EXECUTE payload for a statement with `data[0] % 8` parameters: parsed,
/// each value rendered as a literal in several character sets, and re-encoded.
pub fn execute(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let count = (n % 8) as usize;
    let payload = Bytes::copy_from_slice(rest);
    let mut types = Vec::new();
    let mut long: Vec<Option<BytesMut>> = vec![None; count];
    if n & 0x80 != 0 && count > 0 {
        long[0] = Some(BytesMut::from(&rest[..rest.len().min(16)]));
    }
    let Ok(exec) = Execute::parse(&payload, count, &mut types, &mut long) else {
        return;
    };
    for p in &exec.params {
        let _ = p.to_sql_value();
        for cs in ["utf8mb4", "gbk", "latin1"] {
            let cs = Charset::from_name(cs).unwrap_or_default();
            for nbe in [false, true] {
                let mut s = String::new();
                p.write_literal(&mut s, cs, nbe);
                // A literal is one token: it never closes its quote early.
                let b = charset::encode(&s);
                assert!(!b.is_empty());
            }
        }
    }
    let enc = exec.encode(7);
    let again = Execute::parse(
        &enc.freeze().slice(1..),
        count,
        &mut Vec::new(),
        &mut vec![None; count],
    )
    .expect("an execute re-encodes");
    assert_eq!(again.params, exec.params);
}

fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: std::sync::OnceLock<Snapshot> = std::sync::OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let entries = [
            (
                "keyspaces/commerce",
                r#"{"tables": {"product": {}, "seq": {"type": "sequence"}}}"#,
            ),
            (
                "keyspaces/commerce/shards/-",
                r#"{"primary": "127.0.0.1:1", "database": "commerce"}"#,
            ),
            (
                "keyspaces/customer",
                r#"{"sharded": true, "vindexes": {"hash": {"type": "hash"}, "xx": {"type": "xxhash"}},
                    "tables": {"customer": {"column_vindexes": [{"column": "id", "name": "hash"}],
                                            "auto_increment": {"column": "id", "sequence": "seq"}},
                               "orders": {"column_vindexes": [{"column": "id", "name": "hash"}]},
                               "names": {"column_vindexes": [{"column": "name", "name": "xx"}]},
                               "region": {"type": "reference"}},
                    "sequence_keyspace": "commerce"}"#,
            ),
            (
                "keyspaces/customer/shards/-80",
                r#"{"primary": "127.0.0.1:2", "database": "customer"}"#,
            ),
            (
                "keyspaces/customer/shards/80-",
                r#"{"primary": "127.0.0.1:3", "database": "customer_b"}"#,
            ),
        ];
        Snapshot::build(1, entries.iter().map(|(k, v)| (*k, v.as_bytes())))
            .expect("the fuzzing topology is valid")
    })
}

fn schema() -> &'static crate::schema::Schemas {
    static SCHEMA: std::sync::OnceLock<crate::schema::Schemas> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        crate::schema::for_tests(&[
            ("commerce", "product", &["sku", "price"], &["sku"]),
            ("customer", "customer", &["id", "name", "region"], &["id"]),
            (
                "customer",
                "orders",
                &["id", "customer_id", "total"],
                &["id"],
            ),
            ("customer", "names", &["name", "id"], &["name"]),
            ("customer", "region", &["code", "name"], &["code"]),
        ])
    })
}

/// SQL text as a client sends it: decoded in a character set chosen by `data[0]`, read as
/// the backend reads it (both sql_modes), split, and every statement planned on both
/// keyspaces. The view must always encode back to the exact input.
pub fn sql(data: &[u8]) {
    let Some((&sel, raw)) = data.split_first() else {
        return;
    };
    let cs = pick_charset(sel);
    let view = charset::decode(raw, cs);
    assert_eq!(&*charset::encode(&view), raw, "the view is lossless");
    let _ = charset::display(&view);
    for nbe in [false, true] {
        let opts = lexer::ReadOptions {
            no_backslash_escapes: nbe,
            server_version: 101106,
        };
        let text = lexer::normalize(&view, opts);
        if !nbe {
            assert_eq!(text.len(), view.len(), "normalizing keeps offsets");
        }
        let _ = lexer::reserved_name(&text);
        let _ = lexer::nesting_depth(&text);
        for stmt in sqltext::split_statements(&text) {
            let t = sqltext::SqlTemplate::new(stmt);
            assert_eq!(t.with_placeholders(), stmt);
            let _ = sqltext::leading_words(stmt, 4);
            let _ = planner::facts::of(stmt, None);
            for ks in [Some("commerce"), Some("customer"), None] {
                let ctx = PlanContext {
                    snapshot: snapshot(),
                    schema: schema(),
                    keyspace: ks,
                    shard: None,
                };
                if let Ok(p) = planner::plan(stmt, &ctx) {
                    let _ = serde_json::to_string(&p);
                }
            }
        }
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// A connected pair of loopback sockets.
async fn pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let a = TcpStream::connect(l.local_addr()?).await?;
    let (b, _) = l.accept().await?;
    Ok((a, b))
}

/// `data` as a backend's answer to a command, relayed to a client (with and without
/// DEPRECATE_EOF, as the last or a middle statement) and read as one shard of a
/// multi-shard result. Nothing the backend sends may panic the proxy or hang it.
pub fn relay(data: &[u8]) {
    let data = data.to_vec();
    runtime().block_on(async move {
        let Some((&flags, answer)) = data.split_first() else {
            return;
        };
        let Ok((backend_end, backend)) = pair().await else {
            return;
        };
        let Ok((client_end, client)) = pair().await else {
            return;
        };
        let answer = answer.to_vec();
        let feeder = tokio::spawn(async move {
            let mut s = backend;
            let _ = s.write_all(&answer).await;
            let _ = s.shutdown().await;
            s
        });
        let sink = tokio::spawn(async move {
            let mut c = client;
            let mut buf = vec![0u8; 64 * 1024];
            use tokio::io::AsyncReadExt;
            while let Ok(n) = c.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        let mut conn = BackendConn::from_stream(backend_end);
        let mut io = PacketIo::new(NetStream::Plain(client_end));
        let caps = CLIENT_PROTOCOL_41
            | if flags & 1 != 0 {
                CLIENT_DEPRECATE_EOF
            } else {
                0
            };
        {
            let mut out = Responder::new(&mut io, caps);
            let opts = RelayOptions {
                more_results: flags & 2 != 0,
            };
            let step = async {
                if flags & 4 != 0 {
                    let _ = relay_rows_only(&mut conn, &mut out).await;
                } else {
                    let _ = relay_response(&mut conn, &mut out, opts).await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), step).await;
        }
        let _ = io.flush().await;
        drop(io);
        let _ = feeder.await;
        let _ = sink.await;
    });
}

/// A do-nothing service for [`client`]: `root` without a password; `sha2` and `cached`
/// (password `pw`, both hashes; `cached` takes the caching_sha2 fast path) and `tls`
/// (requires TLS, which this service does not offer); a handler that answers every
/// command.
struct FuzzService;

struct FuzzHandler;

impl Service for FuzzService {
    type Handler = FuzzHandler;
    fn server_version(&self) -> String {
        "10.11.6-MariaDB-fuzz".into()
    }
    fn max_allowed_packet(&self) -> usize {
        1 << 16
    }
    fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(2)
    }
    fn write_timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(2))
    }
    fn account(&self, user: &str) -> Option<Account> {
        let pw = || PasswordHash::parse(&shardgate_config::hash_password("pw")).ok();
        let (password, sha2, require_tls) = match user {
            "root" => (PasswordHash::Empty, None, false),
            "sha2" | "cached" => (pw()?, Some(Sha2Hash::of_password(b"pw")), false),
            "tls" => (pw()?, Some(Sha2Hash::of_password(b"pw")), true),
            _ => return None,
        };
        Some(Account {
            password,
            sha2,
            hosts: vec!["%".into()],
            require_tls,
        })
    }
    fn rsa_keys(&self) -> Option<&RsaKeys> {
        static KEYS: std::sync::OnceLock<Option<RsaKeys>> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| RsaKeys::generate().ok()).as_ref()
    }
    fn sha2_cache(&self) -> Option<&Sha2Cache> {
        static CACHE: std::sync::OnceLock<Sha2Cache> = std::sync::OnceLock::new();
        Some(CACHE.get_or_init(|| {
            let c = Sha2Cache::default();
            c.insert("cached", &Sha2Hash::of_password(b"pw"));
            c
        }))
    }
    fn start(&self, _info: ClientInfo) -> Result<FuzzHandler, ErrPacket> {
        Ok(FuzzHandler)
    }
}

impl Handler for FuzzHandler {
    async fn query(&mut self, sql: Bytes, out: &mut Responder<'_>) -> HandlerResult {
        let view = charset::decode(&sql, Charset::UTF8MB4);
        out.result_set(
            &[ColumnDef::text(&view)],
            &[vec![Some(charset::encode(&view))]],
            SERVER_STATUS_AUTOCOMMIT,
        );
        Ok(())
    }
    async fn init_db(&mut self, _db: &str, out: &mut Responder<'_>) -> HandlerResult {
        out.ok(&OkPacket::default());
        Ok(())
    }
    async fn field_list(&mut self, _t: &str, _w: &str, out: &mut Responder<'_>) -> HandlerResult {
        out.eof(0, 0);
        Ok(())
    }
    async fn prepare(&mut self, _sql: Bytes, out: &mut Responder<'_>) -> HandlerResult {
        out.prepare_ok(1, 0, 1, 0);
        out.build(|b| ColumnDef::text("?").encode(b));
        out.end_columns(SERVER_STATUS_AUTOCOMMIT);
        Ok(())
    }
    async fn execute(&mut self, payload: Bytes, out: &mut Responder<'_>) -> HandlerResult {
        let mut types = Vec::new();
        match Execute::parse(&payload, 1, &mut types, &mut [None]) {
            Ok(_) => out.ok(&OkPacket::default()),
            Err(_) => out.error(&ErrPacket::new(1210, "HY000", "bad execute")),
        }
        Ok(())
    }
    async fn fetch(&mut self, _p: Bytes, out: &mut Responder<'_>) -> HandlerResult {
        out.error(&ErrPacket::new(1421, "HY000", "no cursor"));
        Ok(())
    }
    fn send_long_data(&mut self, _: u32, _: u16, _: &[u8]) {}
    async fn close_statement(&mut self, _: u32) {}
    async fn reset_statement(&mut self, _: u32, out: &mut Responder<'_>) -> HandlerResult {
        out.ok(&OkPacket::default());
        Ok(())
    }
    async fn reset_connection(&mut self, out: &mut Responder<'_>) -> HandlerResult {
        out.ok(&OkPacket::default());
        Ok(())
    }
    fn set_multi_statements(&mut self, _: bool) {}
    async fn ping(&mut self, out: &mut Responder<'_>) -> HandlerResult {
        out.ok(&OkPacket::default());
        Ok(())
    }
    async fn kill(&mut self, _: u32, out: &mut Responder<'_>) -> HandlerResult {
        out.ok(&OkPacket::default());
        Ok(())
    }
    fn statistics(&self) -> String {
        "Uptime: 1".into()
    }
    fn status(&self) -> u16 {
        SERVER_STATUS_AUTOCOMMIT
    }
    async fn close(&mut self) {}
    fn abort(&mut self) {}
}

/// `data` as everything a client sends on a new connection (handshake response, then
/// commands), served by the real connection loop with a trivial handler.
pub fn client(data: &[u8]) {
    let data = data.to_vec();
    runtime().block_on(async move {
        let Ok((server_end, client)) = pair().await else {
            return;
        };
        let talker = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut c = client;
            let mut greeting = [0u8; 256];
            let _ = c.read(&mut greeting).await;
            let _ = c.write_all(&data).await;
            let _ = c.shutdown().await;
            let mut sink = vec![0u8; 64 * 1024];
            while let Ok(n) = c.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            crate::wire::serve(&FuzzService, server_end, 1, rx),
        )
        .await;
        let _ = talker.await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SQL-ish input: keywords, quotes, comments, executable comments, placeholders and
    /// Unicode, glued together, with raw bytes now and then.
    fn sqlish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just("SELECT ".to_string()),
            Just(" FROM customer".to_string()),
            Just(" FROM product".to_string()),
            Just(" WHERE id = ".to_string()),
            Just(" IN (1, 2)".to_string()),
            Just("'".to_string()),
            Just("\"".to_string()),
            Just("`".to_string()),
            Just("\\".to_string()),
            Just("/*".to_string()),
            Just("*/".to_string()),
            Just("/*!40101 ".to_string()),
            Just("/*M!100100 ".to_string()),
            Just("-- ".to_string()),
            Just("#".to_string()),
            Just("\n".to_string()),
            Just(";".to_string()),
            Just("?".to_string()),
            Just(":sg_db".to_string()),
            Just("@sg_x".to_string()),
            Just("EXPLAIN FORMAT=shardgate ".to_string()),
            Just("INSERT INTO customer (id, name) VALUES ".to_string()),
            Just("(1, 'é')".to_string()),
            Just("UPDATE customer SET name = 'x'".to_string()),
            Just(" ORDER BY 1 LIMIT 3".to_string()),
            Just(" GROUP BY id HAVING COUNT(*) > 1".to_string()),
            Just("_binary'".to_string()),
            Just("X'FF'".to_string()),
            "[a-z0-9_ ]{0,8}",
            "\\PC{0,4}",
        ];
        (
            any::<u8>(),
            proptest::collection::vec(piece, 0..24),
            proptest::collection::vec(any::<u8>(), 0..4),
        )
            .prop_map(|(cs, pieces, raw)| {
                let mut v = vec![cs];
                v.extend(pieces.concat().into_bytes());
                v.extend(raw);
                v
            })
    }

    /// Inputs the fuzzers found, kept so they never come back.
    #[test]
    fn regressions() {
        // Long data for a parameter declared DATETIME was re-encoded as a DATETIME.
        execute(&[
            0xfc, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0, 0, 0, 1, 0x0c, 0, 0x10, 0, 0, 0, 1,
            0xf6, 0, 0, 0, 0, 0, 7, 0xe8, 7, 3, 9, 0x0a, 0x0b, 0x0c,
        ]);
        // COUNT(<letter><multi-byte character>) was sliced inside the character.
        sql(b"\x03SELECT COUNT(B\xb2), n FROM customer GROUP BY n");
        sql("\x00PREPARE s F\u{e9}ROM 'x'".as_bytes());
        // A TIME parameter of 2^32 - 1 days overflowed the hour count.
        let mut time = vec![1u8, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0x0b, 0, 8, 0];
        time.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 23, 59, 59]);
        execute(&time);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn sql_never_panics(data in sqlish()) {
            sql(&data);
        }

        #[test]
        fn raw_sql_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            sql(&data);
        }

        #[test]
        fn packets_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            packets(&data);
        }

        #[test]
        fn executes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..120)) {
            execute(&data);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        #[test]
        fn relayed_answers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            relay(&data);
        }

        #[test]
        fn client_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            client(&data);
        }
    }
}
