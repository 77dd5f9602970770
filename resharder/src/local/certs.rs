//! The local cluster's TLS files: a private CA and a server certificate for `127.0.0.1`
//! and `localhost`, made on the first `shardctl up` in a directory and kept after that
//! (as MySQL 8 makes its own at first start). Clients verify the proxy with `ca.pem`.
//!
//! The CA's private key is not kept: it signs the server certificate once and is
//! dropped, so nothing in the directory can issue more certificates.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// Where a cluster directory's TLS files are.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The CA certificate clients trust (`--ssl-ca`).
    pub ca: PathBuf,
    /// The proxy's certificate chain (server certificate, then the CA).
    pub cert: PathBuf,
    /// The proxy's private key (mode 0600).
    pub key: PathBuf,
}

impl CertFiles {
    /// The file names in `dir`.
    pub fn in_dir(dir: &Path) -> CertFiles {
        CertFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server-cert.pem"),
            key: dir.join("server-key.pem"),
        }
    }

    fn all_exist(&self) -> bool {
        self.ca.exists() && self.cert.exists() && self.key.exists()
    }
}

/// The CA and server certificate in `dir`, made when any of the files is missing.
pub fn ensure(dir: &Path) -> Result<CertFiles> {
    let files = CertFiles::in_dir(dir);
    if files.all_exist() {
        return Ok(files);
    }
    let (ca_pem, cert_pem, key_pem) = generate(&["127.0.0.1", "localhost"])?;
    write_private(&files.key, &key_pem)?;
    std::fs::write(&files.cert, format!("{cert_pem}{ca_pem}"))
        .with_context(|| format!("cannot write {}", files.cert.display()))?;
    std::fs::write(&files.ca, &ca_pem)
        .with_context(|| format!("cannot write {}", files.ca.display()))?;
    Ok(files)
}

/// A new CA and a server certificate it signed for `names` (IPs or DNS names): the CA
/// certificate, the server certificate and the server key, as PEM.
pub fn generate(names: &[&str]) -> Result<(String, String, String)> {
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "shardgate local CA");
    dn.push(DnType::OrganizationName, "shardgate");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let year = this_year();
    ca.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    ca.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let ca_cert = ca
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;

    let key = KeyPair::generate().context("generating the server key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "shardgate proxy");
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
        })
        .collect::<Result<Vec<_>, rcgen::Error>>()
        .context("certificate names")?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .context("signing the server certificate")?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// The current year (UTC, to within a day): certificates are valid from January 1st of
/// the year before (clock skew) for ten years.
fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_kept() {
        let dir = std::env::temp_dir().join(format!("sg-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = ensure(&dir).unwrap();
        let cert = std::fs::read_to_string(&files.cert).unwrap();
        assert_eq!(cert.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(std::fs::read_to_string(&files.key)
            .unwrap()
            .contains("PRIVATE KEY"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        let again = ensure(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(&again.cert).unwrap(), cert);
        std::fs::remove_dir_all(&dir).ok();
    }
}
