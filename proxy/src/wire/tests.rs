//! Codec tests: a real mysql_async client against the wire layer with a fake handler.

use super::*;
use crate::wire::consts::*;
use bytes::Bytes;
use mysql_async::prelude::*;
use shardgate_config::{hash_password, PasswordHash};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The fake service: `app` (password `s3cret`, native hash only), `sha` (`s3cret`, both
/// hashes) and `tlsonly` (`s3cret`, both hashes, requires TLS).
#[derive(Default)]
pub(super) struct FakeService {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub secure_only: bool,
    pub rsa: Option<std::sync::Arc<super::sha2::RsaKeys>>,
    pub cache: super::sha2::Sha2Cache,
}
pub(super) struct Fake;

impl Service for FakeService {
    type Handler = Fake;
    fn server_version(&self) -> String {
        "8.0.0-fake".into()
    }
    fn max_allowed_packet(&self) -> usize {
        1 << 20
    }
    fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
    fn account(&self, user: &str) -> Option<Account> {
        let sha2 = Some(shardgate_config::Sha2Hash::of_password(b"s3cret"));
        let (sha2, require_tls) = match user {
            "app" => (None, false),
            "sha" => (sha2, false),
            "tlsonly" => (sha2, true),
            _ => return None,
        };
        Some(Account {
            password: PasswordHash::parse(&hash_password("s3cret")).unwrap(),
            sha2,
            hosts: vec!["localhost".into()],
            require_tls,
        })
    }
    fn tls(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.tls.clone()
    }
    fn require_secure_transport(&self) -> bool {
        self.secure_only
    }
    fn rsa_keys(&self) -> Option<&super::sha2::RsaKeys> {
        self.rsa.as_deref()
    }
    fn sha2_cache(&self) -> Option<&super::sha2::Sha2Cache> {
        Some(&self.cache)
    }
    fn start(&self, info: ClientInfo) -> Result<Fake, ErrPacket> {
        match info.database.as_deref() {
            None | Some("db") => Ok(Fake),
            Some(other) => Err(ErrPacket::new(
                1049,
                "42000",
                format!("Unknown database '{other}'"),
            )),
        }
    }
}

impl Handler for Fake {
    async fn query(&mut self, sql: Bytes, out: &mut Responder<'_>) -> HandlerResult {
        match &sql[..] {
            b"SELECT 1" => out.result_set(
                &[ColumnDef::text("a"), ColumnDef::int("b")],
                &[
                    vec![Some("x".to_string()), Some("1".to_string())],
                    vec![None, Some("2".to_string())],
                ],
                SERVER_STATUS_AUTOCOMMIT,
            ),
            b"MULTI" => {
                out.result_set(
                    &[ColumnDef::int("n")],
                    &[vec![Some("1")]],
                    SERVER_STATUS_AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS,
                );
                out.ok(&OkPacket {
                    affected_rows: 4,
                    status: SERVER_STATUS_AUTOCOMMIT,
                    ..Default::default()
                });
            }
            b"ERR" => out.error(&ErrPacket::new(1146, "42S02", "Table 'db.t' doesn't exist")),
            other => out.ok(&OkPacket {
                affected_rows: other.len() as u64,
                last_insert_id: 7,
                status: SERVER_STATUS_AUTOCOMMIT,
                warnings: 0,
                info: "done".into(),
            }),
        }
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
        out.error(&ErrPacket::new(1295, "HY000", "not in the fake"));
        Ok(())
    }
    async fn execute(&mut self, _p: Bytes, out: &mut Responder<'_>) -> HandlerResult {
        out.error(&ErrPacket::new(1243, "HY000", "no statements"));
        Ok(())
    }
    async fn fetch(&mut self, _p: Bytes, out: &mut Responder<'_>) -> HandlerResult {
        out.error(&ErrPacket::new(1243, "HY000", "no statements"));
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

async fn fake_server() -> String {
    fake_server_with(FakeService::default()).await
}

/// Serves `svc` on a loopback port; returns the address.
pub(super) async fn fake_server_with(svc: FakeService) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (_tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let _keep = _tx;
        let svc = std::sync::Arc::new(svc);
        let mut id = 0;
        loop {
            let (s, _) = l.accept().await.unwrap();
            id += 1;
            let svc = svc.clone();
            let rx = rx.clone();
            tokio::spawn(async move { serve(&*svc, s, id, rx).await });
        }
    });
    addr
}

fn url(addr: &str, user: &str, db: &str) -> String {
    format!("mysql://{user}@{addr}/{db}?prefer_socket=false")
}

#[tokio::test]
async fn mysql_async_reads_results_oks_and_errors() {
    let addr = fake_server().await;
    let mut c = mysql_async::Conn::from_url(url(&addr, "app:s3cret", "db"))
        .await
        .unwrap();
    let rows: Vec<(Option<String>, i64)> = c.query("SELECT 1").await.unwrap();
    assert_eq!(rows, vec![(Some("x".into()), 1), (None, 2)]);
    c.query_drop("UPDATE anything").await.unwrap();
    assert_eq!(c.affected_rows(), 15);
    assert_eq!(c.last_insert_id(), Some(7));
    assert_eq!(c.info(), "done");
    let e = c.query_drop("ERR").await.unwrap_err();
    match e {
        mysql_async::Error::Server(s) => {
            assert_eq!((s.code, s.state.as_str()), (1146, "42S02"));
            assert_eq!(s.message, "Table 'db.t' doesn't exist");
        }
        other => panic!("{other}"),
    }
    let mut r = c.query_iter("MULTI").await.unwrap();
    let first: Vec<i64> = r.collect().await.unwrap();
    assert_eq!(first, vec![1]);
    let _: Vec<i64> = r.collect().await.unwrap();
    drop(r);
    c.ping().await.unwrap();
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn authentication_and_database_errors() {
    let addr = fake_server().await;
    for (user, code) in [("app:wrong", 1045), ("app", 1045), ("other:s3cret", 1045)] {
        match mysql_async::Conn::from_url(url(&addr, user, "db")).await {
            Err(mysql_async::Error::Server(s)) => {
                assert_eq!(s.code, code);
                assert!(!s.message.contains("14E6"), "hash leaked: {}", s.message);
            }
            other => panic!("{user}: {:?}", other.map(|_| ())),
        }
    }
    match mysql_async::Conn::from_url(url(&addr, "app:s3cret", "nope")).await {
        Err(mysql_async::Error::Server(s)) => assert_eq!(s.code, 1049),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn caching_sha2_clients_are_switched_to_native_password() {
    use crate::wire::auth::native_answer;
    use crate::wire::handshake::{decode_auth_switch, Greeting, HandshakeResponse};
    let addr = fake_server().await;
    let s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut io = PacketIo::new(s);
    let g = Greeting::decode(&io.read_packet(1 << 20).await.unwrap()).unwrap();
    assert_eq!(g.scramble.len(), 20);
    let resp = HandshakeResponse {
        capabilities: CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
        max_packet: 1 << 24,
        charset: 45,
        user: "app".into(),
        auth_response: vec![1; 32],
        database: None,
        auth_plugin: Some("caching_sha2_password".into()),
        attributes: vec![],
    };
    let mut b = bytes::BytesMut::new();
    resp.encode(&mut b);
    io.write_packet(&b);
    io.flush().await.unwrap();
    let switch = io.read_packet(1 << 20).await.unwrap();
    let (plugin, scramble) = decode_auth_switch(&switch).unwrap();
    assert_eq!(plugin, "mysql_native_password");
    io.write_packet(&native_answer(b"s3cret", &scramble));
    io.flush().await.unwrap();
    let ok = io.read_packet(1 << 20).await.unwrap();
    assert_eq!(ok[0], 0x00, "expected OK after the auth switch");
}
