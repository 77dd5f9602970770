//! Connection-phase tests with a hand-driven client: TLS upgrade, caching_sha2_password
//! (full authentication over TLS and with RSA, then the fast path), require_secure_transport,
//! per-user require_tls, and malformed input at every step (never a panic, always a
//! MySQL error or a closed connection).

use super::consts::*;
use super::handshake::{Greeting, HandshakeResponse};
use super::sha2::{client_scramble, RsaKeys, CACHING_SHA2_PASSWORD};
use super::tests::{fake_server_with, FakeService};
use super::PacketIo;
use bytes::BytesMut;
use rand::Rng;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const CAPS: u32 = CLIENT_PROTOCOL_41
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_DEPRECATE_EOF;

fn keys() -> Arc<RsaKeys> {
    static KEYS: OnceLock<Arc<RsaKeys>> = OnceLock::new();
    KEYS.get_or_init(|| Arc::new(RsaKeys::generate().unwrap()))
        .clone()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server acceptor and a client connector that trusts it (self-signed for localhost).
fn tls_pair(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

async fn connect(addr: &str) -> (PacketIo<TcpStream>, Greeting) {
    let s = TcpStream::connect(addr).await.unwrap();
    let mut io = PacketIo::new(s);
    let g = Greeting::decode(&io.read_packet(1 << 20).await.unwrap()).unwrap();
    (io, g)
}

fn response(user: &str, plugin: &str, auth: Vec<u8>) -> BytesMut {
    let r = HandshakeResponse {
        capabilities: CAPS,
        max_packet: 1 << 24,
        charset: 45,
        user: user.into(),
        auth_response: auth,
        database: None,
        auth_plugin: Some(plugin.into()),
        attributes: vec![],
    };
    let mut b = BytesMut::new();
    r.encode(&mut b);
    b
}

fn ssl_request() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(CAPS | CLIENT_SSL).to_le_bytes());
    b.extend_from_slice(&(1u32 << 24).to_le_bytes());
    b.push(45);
    b.extend_from_slice(&[0u8; 23]);
    b
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(io: &mut PacketIo<S>, payload: &[u8]) {
    io.write_packet(payload);
    io.flush().await.unwrap();
}

/// The error code of an ERR packet (panics on anything else).
fn errno(p: &[u8]) -> u16 {
    assert_eq!(p.first(), Some(&0xff), "expected an error, got {p:?}");
    u16::from_le_bytes([p[1], p[2]])
}

/// Upgrades a fresh connection to TLS; the next packet has sequence id 2.
async fn upgrade(
    addr: &str,
    connector: &tokio_rustls::TlsConnector,
) -> (
    PacketIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Greeting,
) {
    let (mut io, g) = connect(addr).await;
    assert_ne!(g.capabilities & CLIENT_SSL, 0, "SSL offered");
    send(&mut io, &ssl_request()).await;
    let tcp = io.into_inner().unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let mut io = PacketIo::new(tls);
    io.set_seq(2);
    (io, g)
}

#[tokio::test]
async fn caching_sha2_full_auth_with_rsa_then_fast_path() {
    let addr = fake_server_with(FakeService {
        rsa: Some(keys()),
        ..Default::default()
    })
    .await;
    let (mut io, g) = connect(&addr).await;
    assert_eq!(
        g.capabilities & CLIENT_SSL,
        0,
        "no certificate: no SSL offered"
    );
    let answer = client_scramble(b"s3cret", &g.scramble);
    send(&mut io, &response("sha", CACHING_SHA2_PASSWORD, answer)).await;
    assert_eq!(&io.read_packet(1 << 20).await.unwrap()[..], &[1, 4]);
    send(&mut io, &[2]).await;
    let key = io.read_packet(1 << 20).await.unwrap();
    assert_eq!(key[0], 1);
    let pem = std::str::from_utf8(&key[1..]).unwrap();
    use rsa::pkcs8::DecodePublicKey;
    let public = rsa::RsaPublicKey::from_public_key_pem(pem).unwrap();
    let mut plain = b"s3cret\0".to_vec();
    for (i, b) in plain.iter_mut().enumerate() {
        *b ^= g.scramble[i % g.scramble.len()];
    }
    let cipher = public
        .encrypt(
            &mut rand::thread_rng(),
            rsa::Oaep::new::<sha1::Sha1>(),
            &plain,
        )
        .unwrap();
    send(&mut io, &cipher).await;
    assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 0, "OK");

    // Cached now: the fast path.
    let (mut io, g) = connect(&addr).await;
    let answer = client_scramble(b"s3cret", &g.scramble);
    send(&mut io, &response("sha", CACHING_SHA2_PASSWORD, answer)).await;
    assert_eq!(&io.read_packet(1 << 20).await.unwrap()[..], &[1, 3]);
    assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 0, "OK");

    // A wrong password on the fast path is refused at once.
    let (mut io, g) = connect(&addr).await;
    let answer = client_scramble(b"wrong", &g.scramble);
    send(&mut io, &response("sha", CACHING_SHA2_PASSWORD, answer)).await;
    assert_eq!(errno(&io.read_packet(1 << 20).await.unwrap()), 1045);

    // A client whose default plugin differs from the greeting's sends no answer first
    // (libmariadb with --default-auth): it is asked again by an auth switch.
    let (mut io, g) = connect(&addr).await;
    send(&mut io, &response("sha", CACHING_SHA2_PASSWORD, vec![])).await;
    let switch = io.read_packet(1 << 20).await.unwrap();
    let (plugin, nonce) = super::handshake::decode_auth_switch(&switch).unwrap();
    assert_eq!(
        (plugin.as_str(), &nonce[..]),
        (CACHING_SHA2_PASSWORD, &g.scramble[..])
    );
    send(&mut io, &client_scramble(b"s3cret", &nonce)).await;
    assert_eq!(&io.read_packet(1 << 20).await.unwrap()[..], &[1, 3]);
    assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 0, "OK");
    // An empty answer to the switch too: access denied (using password: NO).
    let (mut io, _) = connect(&addr).await;
    send(&mut io, &response("sha", CACHING_SHA2_PASSWORD, vec![])).await;
    assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 0xfe);
    send(&mut io, &[]).await;
    let p = io.read_packet(1 << 20).await.unwrap();
    assert_eq!(errno(&p), 1045);
    assert!(String::from_utf8_lossy(&p).contains("using password: NO"));

    // The same user with mysql_native_password.
    let (mut io, g) = connect(&addr).await;
    let answer = super::auth::native_answer(b"s3cret", &g.scramble);
    send(&mut io, &response("sha", "mysql_native_password", answer)).await;
    assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 0, "OK");
}

#[tokio::test]
async fn plain_full_auth_refuses_cleartext_junk_and_missing_keys() {
    for rsa in [Some(keys()), None] {
        let addr = fake_server_with(FakeService {
            rsa: rsa.clone(),
            ..Default::default()
        })
        .await;
        let mut junk: Vec<Vec<u8>> = vec![
            b"s3cret\0".to_vec(),
            vec![],
            vec![2, 2],
            vec![0; 256],
            vec![0xff; 256],
        ];
        let mut rng = rand::thread_rng();
        for _ in 0..8 {
            let n = rng.gen_range(0..600);
            junk.push((0..n).map(|_| rng.gen()).collect());
        }
        for (i, bad) in junk.into_iter().enumerate() {
            let (mut io, g) = connect(&addr).await;
            let answer = client_scramble(b"s3cret", &g.scramble);
            send(&mut io, &response("sha", CACHING_SHA2_PASSWORD, answer)).await;
            assert_eq!(&io.read_packet(1 << 20).await.unwrap()[..], &[1, 4]);
            if i % 2 == 0 && rsa.is_some() {
                send(&mut io, &[2]).await;
                assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 1);
            }
            send(&mut io, &bad).await;
            let p = io.read_packet(1 << 20).await.unwrap();
            assert_eq!(errno(&p), 1045, "{rsa:?} {bad:?}", rsa = rsa.is_some());
        }
    }
}

#[tokio::test]
async fn tls_upgrade_then_full_auth_in_clear_then_fast_path() {
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let (acceptor, connector) = tls_pair(versions);
        let addr = fake_server_with(FakeService {
            tls: Some(acceptor),
            ..Default::default()
        })
        .await;
        let (mut io, g) = upgrade(&addr, &connector).await;
        let want = versions[0].version;
        assert_eq!(io.get_ref().get_ref().1.protocol_version(), Some(want));
        let answer = client_scramble(b"s3cret", &g.scramble);
        send(&mut io, &response("sha", CACHING_SHA2_PASSWORD, answer)).await;
        assert_eq!(&io.read_packet(1 << 20).await.unwrap()[..], &[1, 4]);
        send(&mut io, b"s3cret\0").await;
        assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 0, "OK");
        // Commands flow over TLS.
        io.set_seq(0);
        send(&mut io, b"\x03SELECT 1").await;
        assert_eq!(
            io.read_packet(1 << 20).await.unwrap()[..],
            [2],
            "two columns"
        );

        let (mut io, g) = upgrade(&addr, &connector).await;
        let answer = client_scramble(b"s3cret", &g.scramble);
        send(&mut io, &response("sha", CACHING_SHA2_PASSWORD, answer)).await;
        assert_eq!(&io.read_packet(1 << 20).await.unwrap()[..], &[1, 3]);
        assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 0, "OK");
    }
}

#[tokio::test]
async fn secure_transport_and_require_tls() {
    let (acceptor, connector) = tls_pair(&[&rustls::version::TLS13]);
    let native = |g: &Greeting| super::auth::native_answer(b"s3cret", &g.scramble);
    // require_secure_transport: plain refused with 3159, TLS accepted.
    let addr = fake_server_with(FakeService {
        tls: Some(acceptor.clone()),
        secure_only: true,
        ..Default::default()
    })
    .await;
    let (mut io, g) = connect(&addr).await;
    send(
        &mut io,
        &response("app", "mysql_native_password", native(&g)),
    )
    .await;
    let p = io.read_packet(1 << 20).await.unwrap();
    assert_eq!(errno(&p), 3159);
    assert!(String::from_utf8_lossy(&p).contains("require_secure_transport=ON"));
    let (mut io, g) = upgrade(&addr, &connector).await;
    send(
        &mut io,
        &response("app", "mysql_native_password", native(&g)),
    )
    .await;
    assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 0, "OK");

    // require_tls: that user refused on plain with 1045, others fine; over TLS fine.
    let addr = fake_server_with(FakeService {
        tls: Some(acceptor),
        ..Default::default()
    })
    .await;
    let (mut io, g) = connect(&addr).await;
    send(
        &mut io,
        &response("tlsonly", "mysql_native_password", native(&g)),
    )
    .await;
    assert_eq!(errno(&io.read_packet(1 << 20).await.unwrap()), 1045);
    let (mut io, g) = connect(&addr).await;
    send(
        &mut io,
        &response("app", "mysql_native_password", native(&g)),
    )
    .await;
    assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 0, "OK");
    let (mut io, g) = upgrade(&addr, &connector).await;
    send(
        &mut io,
        &response("tlsonly", "mysql_native_password", native(&g)),
    )
    .await;
    assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 0, "OK");
}

#[tokio::test]
async fn malformed_connection_phase_input_is_refused_not_fatal() {
    let (acceptor, _) = tls_pair(&[&rustls::version::TLS13]);
    let addr = fake_server_with(FakeService::default()).await;
    // SSLRequest without a certificate: 1043.
    let (mut io, _) = connect(&addr).await;
    send(&mut io, &ssl_request()).await;
    assert_eq!(errno(&io.read_packet(1 << 20).await.unwrap()), 1043);
    // A caching_sha2 client for a native-only account: switched; a junk answer is 1045.
    let (mut io, g) = connect(&addr).await;
    let answer = client_scramble(b"s3cret", &g.scramble);
    send(&mut io, &response("app", CACHING_SHA2_PASSWORD, answer)).await;
    assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 0xfe);
    send(&mut io, &[7; 3]).await;
    assert_eq!(errno(&io.read_packet(1 << 20).await.unwrap()), 1045);

    // Junk after an SSLRequest, bad sequence ids, huge lengths: the connection closes.
    let tls_addr = fake_server_with(FakeService {
        tls: Some(acceptor),
        ..Default::default()
    })
    .await;
    let mut rng = rand::thread_rng();
    for i in 0..12 {
        let (io, _) = connect(if i % 2 == 0 { &tls_addr } else { &addr }).await;
        let mut tcp = io.into_inner().unwrap();
        let mut bytes = Vec::new();
        match i % 4 {
            0 => {
                let req = ssl_request();
                bytes.extend_from_slice(&[32, 0, 0, 1]);
                bytes.extend_from_slice(&req);
                let n = rng.gen_range(0..300);
                bytes.extend((0..n).map(|_| rng.gen::<u8>()));
                // A TLS record header with a wild length.
                bytes.extend_from_slice(&[0x16, 0x03, 0x01, 0xff, 0xff]);
            }
            1 => bytes.extend_from_slice(&[5, 0, 0, 9, 1, 2, 3, 4, 5]),
            2 => bytes.extend_from_slice(&[0xff, 0xff, 0xff, 1, 0]),
            _ => {
                let n = rng.gen_range(1..64u8);
                bytes.extend_from_slice(&[n, 0, 0, 1]);
                bytes.extend((0..n).map(|_| rng.gen::<u8>()));
            }
        }
        let _ = tcp.write_all(&bytes).await;
        let _ = tcp.shutdown().await;
        let mut sink = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink),
        )
        .await;
        assert!(read.is_ok(), "case {i}: the server closed the connection");
    }
    // Both servers still serve.
    for a in [&addr, &tls_addr] {
        let (mut io, g) = connect(a).await;
        let answer = super::auth::native_answer(b"s3cret", &g.scramble);
        send(&mut io, &response("app", "mysql_native_password", answer)).await;
        assert_eq!(io.read_packet(1 << 20).await.unwrap()[0], 0, "OK");
    }
}
