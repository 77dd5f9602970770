//! Client security state: the TLS certificate served to clients (reloaded on SIGHUP), the
//! RSA key pair and cache of `caching_sha2_password`, and the TLS client configuration
//! for backends (`backend.tls_ca_file`).
//!
//! A reload that fails (missing file, bad PEM, key not matching the certificate) keeps the
//! certificate in use and logs why; connections already open keep the TLS session they
//! negotiated.

use crate::wire::sha2::{RsaKeys, Sha2Cache};
use arc_swap::ArcSwapOption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use shardgate_config::Config;
use std::sync::Arc;

/// What the listener needs to offer TLS and authenticate with `caching_sha2_password`.
pub struct Security {
    /// The certificate files, when TLS is configured.
    files: Option<(String, String)>,
    acceptor: ArcSwapOption<tokio_rustls::TlsAcceptor>,
    /// SHA256 of the served leaf certificate (hex), for logs and tests.
    fingerprint: ArcSwapOption<String>,
    /// Refuse plain logins (error 3159).
    pub require_secure_transport: bool,
    /// The RSA key pair: loaded at start from `tls.rsa_key_file`, or generated once some
    /// user has a `caching_sha2_hash` (a config user at start, an etcd user when first
    /// seen; see [`Security::want_rsa`]).
    rsa: Arc<std::sync::OnceLock<RsaKeys>>,
    /// A key generation was started.
    generating: std::sync::atomic::AtomicBool,
    /// Users that completed a full `caching_sha2_password` authentication.
    pub sha2_cache: Sha2Cache,
    /// Failed logins per client address (repeated failures are answered later).
    pub login_delays: crate::wire::delays::LoginDelays,
}

/// The crypto provider every rustls configuration here uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Security {
    /// Loads the certificate and the RSA key as configured (generating the RSA key when
    /// users need one and none is configured). Errors name the file at fault.
    pub fn load(config: &Config) -> Result<Security, String> {
        let tls = &config.tls;
        let files =
            (!tls.cert_file.is_empty()).then(|| (tls.cert_file.clone(), tls.key_file.clone()));
        let security = Security {
            files,
            acceptor: ArcSwapOption::empty(),
            fingerprint: ArcSwapOption::empty(),
            require_secure_transport: tls.require_secure_transport,
            rsa: Arc::new(
                rsa_keys(config)?
                    .map(std::sync::OnceLock::from)
                    .unwrap_or_default(),
            ),
            generating: Default::default(),
            sha2_cache: Sha2Cache::default(),
            login_delays: Default::default(),
        };
        if security.files.is_some() {
            security.reload()?;
        }
        Ok(security)
    }

    /// No TLS, no RSA key (tests and tools).
    pub fn none() -> Security {
        Security {
            files: None,
            acceptor: ArcSwapOption::empty(),
            fingerprint: ArcSwapOption::empty(),
            require_secure_transport: false,
            rsa: Default::default(),
            generating: Default::default(),
            sha2_cache: Sha2Cache::default(),
            login_delays: Default::default(),
        }
    }

    /// Reads the certificate and key again; new connections get them. On error the
    /// certificate in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let Some((cert, key)) = &self.files else {
            return Ok(());
        };
        let (config, fingerprint) = server_config(cert, key)?;
        self.acceptor
            .store(Some(Arc::new(tokio_rustls::TlsAcceptor::from(Arc::new(
                config,
            )))));
        tracing::info!(cert_file = %cert, sha256 = %fingerprint, "TLS certificate loaded");
        self.fingerprint.store(Some(Arc::new(fingerprint)));
        Ok(())
    }

    /// The acceptor for a new connection, if TLS is configured.
    pub fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.acceptor.load().as_deref().cloned()
    }

    /// The RSA key pair, when there is one.
    pub fn rsa(&self) -> Option<&RsaKeys> {
        self.rsa.get()
    }

    /// Whether a key generation started and has not finished.
    pub fn rsa_pending(&self) -> bool {
        self.rsa.get().is_none() && self.generating.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes sure an RSA key pair exists or is being generated (on a thread of its own:
    /// it takes a moment). A client that needs it before it is ready is refused once.
    pub fn want_rsa(&self) {
        if self.rsa.get().is_some()
            || self
                .generating
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let cell = self.rsa.clone();
        std::thread::spawn(move || match RsaKeys::generate() {
            Ok(keys) => {
                tracing::info!(sha256 = %keys.fingerprint, "caching_sha2_password RSA key generated (set tls.rsa_key_file to keep one)");
                let _ = cell.set(keys);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot generate the caching_sha2_password RSA key")
            }
        });
    }

    /// SHA256 of the certificate in use (hex).
    pub fn fingerprint(&self) -> Option<String> {
        self.fingerprint.load().as_deref().cloned()
    }
}

/// The configured RSA key, or a new one when some user can use `caching_sha2_password`.
fn rsa_keys(config: &Config) -> Result<Option<RsaKeys>, String> {
    let file = &config.tls.rsa_key_file;
    if !file.is_empty() {
        let pem =
            std::fs::read_to_string(file).map_err(|e| format!("tls.rsa_key_file {file}: {e}"))?;
        let keys = RsaKeys::from_pem(&pem).map_err(|e| format!("tls.rsa_key_file {file}: {e}"))?;
        tracing::info!(file = %file, sha256 = %keys.fingerprint, "caching_sha2_password RSA key loaded");
        return Ok(Some(keys));
    }
    if config.users.iter().all(|u| u.caching_sha2_hash.is_empty()) {
        return Ok(None);
    }
    let keys = RsaKeys::generate().map_err(|e| format!("generating an RSA key: {e}"))?;
    tracing::info!(sha256 = %keys.fingerprint, "caching_sha2_password RSA key generated (set tls.rsa_key_file to keep one)");
    Ok(Some(keys))
}

fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{path}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no PEM certificate in the file"));
    }
    Ok(certs)
}

/// A rustls server configuration (TLS 1.2 and 1.3) for the certificate chain and key.
fn server_config(cert: &str, key: &str) -> Result<(rustls::ServerConfig, String), String> {
    let certs = read_certs(cert)?;
    let fingerprint = hex(&Sha256::digest(&certs[0]));
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{cert}: {e}"))?;
    Ok((config, fingerprint))
}

/// A TLS client configuration that trusts only the CAs in `ca_file` (backend connections).
pub fn backend_client_config(ca_file: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca_file)? {
        roots.add(cert).map_err(|e| format!("{ca_file}: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, name: &str) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        (cert.display().to_string(), key.display().to_string())
    }

    #[test]
    fn reload_swaps_the_certificate_and_keeps_it_on_a_bad_file() {
        let dir = std::env::temp_dir().join(format!("sg-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = write_pair(&dir, "a");
        let mut config = Config::default();
        config.tls.cert_file = cert.clone();
        config.tls.key_file = key.clone();
        let s = Security::load(&config).unwrap();
        let first = s.fingerprint().unwrap();
        assert!(s.acceptor().is_some());
        assert!(
            s.rsa().is_none(),
            "no caching_sha2 user: no RSA key generated"
        );
        // Overwrite with a new pair: the fingerprint changes.
        let (c2, k2) = write_pair(&dir, "b");
        std::fs::copy(&c2, &cert).unwrap();
        std::fs::copy(&k2, &key).unwrap();
        s.reload().unwrap();
        let second = s.fingerprint().unwrap();
        assert_ne!(first, second);
        // A broken file: the error names it, the certificate in use stays.
        std::fs::write(&cert, "not a certificate").unwrap();
        let err = s.reload().unwrap_err();
        assert!(err.contains(&cert), "{err}");
        assert_eq!(s.fingerprint().unwrap(), second);
        // A key that does not match the certificate is refused too.
        std::fs::copy(&c2, &cert).unwrap();
        let (_, k3) = write_pair(&dir, "c");
        std::fs::copy(&k3, &key).unwrap();
        assert!(s.reload().is_err());
        assert_eq!(s.fingerprint().unwrap(), second);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_files_are_errors_at_start() {
        let mut config = Config::default();
        config.tls.cert_file = "/nonexistent/cert.pem".into();
        config.tls.key_file = "/nonexistent/key.pem".into();
        assert!(Security::load(&config)
            .err()
            .unwrap()
            .contains("/nonexistent/cert.pem"));
        assert!(backend_client_config("/nonexistent/ca.pem").is_err());
    }
}
