//! TLS for carriers: the server's identity and the client's trust.
//!
//! Carriers speak TLS 1.3 only, with rustls on the aws-lc-rs provider. The server has an identity:
//! a self-signed certificate generated once into its state directory, or an operator's own chain.
//! Users recognise it by its fingerprint (`sha256:<hex>` of the leaf certificate), which the server
//! prints at start-up. The client trusts a server in one of three ways ([`Trust`]): a pinned
//! fingerprint, a CA file, or trust on first use recorded in a known_servers file, as ssh does.
//! Whatever the mode, a refusal surfaces as `rustls::Error::InvalidCertificate`, so the client can
//! tell "this is not the server you trusted" ([`is_trust_error`]) from an ordinary network failure.

/// TLS sessions remembered for resumption, on each side.
const SESSION_CACHE: usize = 4096;

pub use rustls;
pub use tokio_rustls;

use anyhow::{Context, anyhow, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// File name of the generated certificate inside the server's state directory.
const CERT_FILE: &str = "server.crt";
/// File name of the generated private key inside the server's state directory.
const KEY_FILE: &str = "server.key";
/// Prefix of every fingerprint burrow prints or stores.
const FINGERPRINT_PREFIX: &str = "sha256:";

/// The server's TLS identity: its rustls configuration and the fingerprint users pin.
#[derive(Clone)]
pub struct ServerIdentity {
    config: Arc<rustls::ServerConfig>,
    fingerprint: String,
}

// Only the fingerprint: nothing near the private key belongs in a log line.
impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// Loads `state_dir/server.crt` and `server.key`, or generates and stores a new self-signed
    /// identity when neither exists. The directory is created with mode 0700 if missing.
    pub fn load_or_generate(state_dir: &Path) -> anyhow::Result<Self> {
        create_private_dir(state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let cert = state_dir.join(CERT_FILE);
        let key = state_dir.join(KEY_FILE);
        match (cert.exists(), key.exists()) {
            (true, true) => {}
            (false, false) => generate_identity(&cert, &key)?,
            (true, false) => bail!(
                "found {} but not {}; restore the key, or remove the certificate to generate \
                 a new identity",
                cert.display(),
                key.display()
            ),
            (false, true) => bail!(
                "found {} but not {}; restore the certificate, or remove the key to generate \
                 a new identity",
                key.display(),
                cert.display()
            ),
        }
        warn_if_key_readable_by_others(&key);
        Self::from_pem_files(&cert, &key)
    }

    /// Loads an operator's certificate chain (leaf first) and private key from PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow!("cannot read certificates from {}: {e}", cert.display()))?;
        let Some(leaf) = chain.first() else {
            bail!("no PEM certificate found in {}", cert.display());
        };
        let fingerprint = fingerprint_of(leaf);
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                anyhow!("no PEM private key found in {}", key.display())
            }
            e => anyhow!("cannot read the private key from {}: {e}", key.display()),
        })?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("the TLS provider does not support TLS 1.3")?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => anyhow!(
                    "the private key in {} does not match the certificate in {}",
                    key.display(),
                    cert.display()
                ),
                e => anyhow!(
                    "cannot use certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                ),
            })?;
        let mut config = config;
        // Every visitor's data connection is a TLS connection from the same client: keep enough
        // sessions for resumption to skip the certificate and signature work nearly always.
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        Ok(Self {
            config: Arc::new(config),
            fingerprint,
        })
    }

    /// The leaf certificate's fingerprint, `sha256:<64 lowercase hex>`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The rustls server configuration (TLS 1.3 only, no client certificates).
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }
}

/// The fingerprint of a DER certificate: `sha256:` and the lowercase hex SHA-256 of the DER.
pub fn fingerprint_of(cert_der: &[u8]) -> String {
    format_fingerprint(&sha256(cert_der))
}

/// Parses a fingerprint as users type it: with or without `sha256:`, any case, colons allowed.
pub fn parse_fingerprint(input: &str) -> anyhow::Result<[u8; 32]> {
    let text = input.trim();
    let hex = match text.get(..FINGERPRINT_PREFIX.len()) {
        Some(p) if p.eq_ignore_ascii_case(FINGERPRINT_PREFIX) => &text[FINGERPRINT_PREFIX.len()..],
        _ => text,
    };
    let nibbles: Option<Vec<u8>> = hex
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect();
    let Some(nibbles) = nibbles.filter(|n| n.len() == 64) else {
        bail!(
            "invalid server fingerprint {input:?}: expected sha256: followed by 64 hex digits, \
             as the server prints at start-up"
        );
    };
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(nibbles.chunks(2)) {
        *byte = (pair[0] << 4) | pair[1];
    }
    Ok(out)
}

/// How the client decides that it reached the right server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Accept only a leaf certificate with this fingerprint (any form [`parse_fingerprint`] takes).
    Fingerprint(String),
    /// Verify the certificate chain and name against the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// Trust the first fingerprint seen for the server and record it; refuse any other later.
    FirstUse {
        /// The known_servers file: lines of `host:port sha256:<hex>`.
        known_hosts: PathBuf,
    },
}

/// Builds the client's TLS 1.3 configuration for `server` (`host:port` as the user wrote it,
/// which is also the known_servers key in first-use mode).
pub fn client_config(trust: &Trust, server: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    client_config_with(server_verifier(trust, server)?).map(Arc::new)
}

/// burrow's client configuration around a given certificate check.
pub(crate) fn client_config_with(
    verifier: Arc<dyn ServerCertVerifier>,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("the TLS provider does not support TLS 1.3")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::in_memory_sessions(SESSION_CACHE);
    Ok(config)
}

/// The check behind [`client_config`] on its own, for carriers that build their own rustls
/// configuration around it (QUIC wraps it to tell trust failures apart).
pub(crate) fn server_verifier(
    trust: &Trust,
    server: &str,
) -> anyhow::Result<Arc<dyn ServerCertVerifier>> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let pin = match trust {
        Trust::CaFile(path) => {
            let roots = Arc::new(load_roots(path)?);
            let verifier =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .with_context(|| format!("cannot use the CA file {}", path.display()))?;
            return Ok(verifier);
        }
        Trust::Fingerprint(fp) => Pin::Fixed(parse_fingerprint(fp)?),
        Trust::FirstUse { known_hosts } => Pin::KnownHosts {
            server: known_hosts_key(server)?,
            file: known_hosts.clone(),
            unsaved: Mutex::new(None),
        },
    };
    Ok(Arc::new(PinVerifier { pin, algorithms }))
}

/// The default known_servers file: `<config dir>/burrow/known_servers`.
pub fn default_known_hosts() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("burrow").join("known_servers"))
}

/// The TLS server name for a host: an IP address (brackets allowed) or a DNS name.
pub fn server_name(host: &str) -> anyhow::Result<ServerName<'static>> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if let Ok(ip) = bare.unwrap_or(host).parse::<std::net::IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    let dns = rustls_pki_types::DnsName::try_from(host.to_owned())
        .map_err(|_| anyhow!("invalid server host name {host:?}"))?;
    Ok(ServerName::DnsName(dns))
}

/// True when a TLS handshake failed because the server's certificate was not trusted
/// (pinned fingerprint, known_servers entry or CA verification mismatch).
pub fn is_trust_error(err: &io::Error) -> bool {
    matches!(tls_error(err), Some(rustls::Error::InvalidCertificate(_)))
}

/// The one-line explanation of a trust failure, for the user; `None` for other errors.
pub fn trust_error_message(err: &io::Error) -> Option<String> {
    match tls_error(err)? {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            Some(other.0.to_string())
        }
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            Some("the server's certificate is not signed by a trusted CA".to_owned())
        }
        rustls::Error::InvalidCertificate(e) => {
            Some(format!("the server's certificate is not trusted: {e}"))
        }
        _ => None,
    }
}

fn tls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ::aws_lc_rs::digest::digest(&::aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn format_fingerprint(digest: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(FINGERPRINT_PREFIX.len() + 64);
    out.push_str(FINGERPRINT_PREFIX);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Generates a self-signed identity; the key is written 0600 from the start, never chmodded.
fn generate_identity(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let key_pair = rcgen::KeyPair::generate().context("cannot generate a server key")?;
    let mut params =
        rcgen::CertificateParams::new(vec!["burrow.invalid".to_owned(), "localhost".to_owned()])
            .context("cannot build the server certificate")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "burrow server");
    // A pinned self-signed certificate has no use for expiry; ten years keeps tools quiet.
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let certificate = params
        .self_signed(&key_pair)
        .context("cannot sign the server certificate")?;
    let written = write_new_file(key, key_pair.serialize_pem().as_bytes(), 0o600)
        .and_then(|()| write_new_file(cert, certificate.pem().as_bytes(), 0o644));
    if let Err(e) = written {
        // Leave nothing half-made behind: a lone key would block the next start.
        let _ = fs::remove_file(key);
        let _ = fs::remove_file(cert);
        return Err(e);
    }
    tracing::info!(
        fingerprint = %fingerprint_of(certificate.der()),
        "generated a new server identity in {}",
        cert.parent().unwrap_or(cert).display()
    );
    Ok(())
}

fn current_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    set_mode(&mut options, mode);
    options
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(unix)]
fn set_mode(options: &mut OpenOptions, mode: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(mode);
}

#[cfg(not(unix))]
fn set_mode(_options: &mut OpenOptions, _mode: u32) {}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(unix)]
fn warn_if_key_readable_by_others(key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(key) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!("{} is readable by other users; chmod 600 it", key.display());
        }
    }
}

#[cfg(not(unix))]
fn warn_if_key_readable_by_others(_key: &Path) {}

pub(crate) fn load_roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("cannot read CA certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("no PEM certificate found in CA file {}", path.display());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| anyhow!("unusable CA certificate in {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The known_servers key for a server address: trimmed, host lowercased, one word.
fn known_hosts_key(server: &str) -> anyhow::Result<String> {
    let key = server.trim().to_ascii_lowercase();
    if key.is_empty() || key.contains(char::is_whitespace) {
        bail!("invalid server address {server:?}");
    }
    Ok(key)
}

/// What a [`PinVerifier`] compares the leaf certificate with.
#[derive(Debug)]
enum Pin {
    /// A fingerprint given by the user.
    Fixed([u8; 32]),
    /// The entry for `server` in a known_servers file, recorded on first use.
    KnownHosts {
        server: String,
        file: PathBuf,
        /// Serialises read-then-append, and remembers a first-use fingerprint for this process
        /// when the file could not be written.
        unsaved: Mutex<Option<[u8; 32]>>,
    },
}

/// Accepts exactly one leaf certificate, ignoring names, chains and dates (like ssh host keys),
/// and still checks that the server proves it holds that certificate's key.
#[derive(Debug)]
struct PinVerifier {
    pin: Pin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinVerifier {
    fn check(&self, presented: [u8; 32]) -> Result<(), String> {
        match &self.pin {
            Pin::Fixed(pin) if *pin == presented => Ok(()),
            Pin::Fixed(pin) => Err(format!(
                "the server's certificate fingerprint {} does not match the pinned {}",
                format_fingerprint(&presented),
                format_fingerprint(pin)
            )),
            Pin::KnownHosts {
                server,
                file,
                unsaved,
            } => {
                let mut unsaved = unsaved.lock().unwrap_or_else(|e| e.into_inner());
                check_known_host(server, file, presented, &mut unsaved)
            }
        }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(sha256(end_entity)).map_err(untrusted)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered, so rustls never asks; verify properly all the same.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why a certificate was refused, carried inside `CertificateError::Other`.
#[derive(thiserror::Error)]
#[error("{0}")]
struct TrustFailure(String);

// rustls shows `CertificateError::Other` with `Debug`; keep the message readable there too.
impl std::fmt::Debug for TrustFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn untrusted(message: String) -> rustls::Error {
    let other = rustls::OtherError(Arc::new(TrustFailure(message)));
    rustls::Error::InvalidCertificate(CertificateError::Other(other))
}

/// Compares `presented` with the known_servers entry for `server`, recording it on first use.
fn check_known_host(
    server: &str,
    file: &Path,
    presented: [u8; 32],
    unsaved: &mut Option<[u8; 32]>,
) -> Result<(), String> {
    let shown = format_fingerprint(&presented);
    match (read_known_host(file, server)?, *unsaved) {
        (Some(known), _) if known == presented => Ok(()),
        (Some(known), _) => Err(format!(
            "the server's certificate fingerprint changed: known_servers ({file}) has {known}, \
             the server presented {shown}; if this change is expected, remove the line for \
             {server} from {file}",
            file = file.display(),
            known = format_fingerprint(&known),
        )),
        (None, Some(known)) if known == presented => Ok(()),
        (None, Some(known)) => Err(format!(
            "the server's certificate fingerprint changed: this process trusted {} on first use \
             but could not record it in {}; the server now presents {shown}",
            format_fingerprint(&known),
            file.display()
        )),
        (None, None) => {
            match append_known_host(file, server, &shown) {
                Ok(()) => tracing::warn!(
                    "trusting {server} on first use, fingerprint {shown}, remembered in {}",
                    file.display()
                ),
                Err(e) => {
                    tracing::warn!(
                        "trusting {server} on first use, fingerprint {shown}, but could not \
                         remember it in {}: {e}",
                        file.display()
                    );
                    *unsaved = Some(presented);
                }
            }
            Ok(())
        }
    }
}

/// The fingerprint recorded for `server`; a missing file means no entry.
fn read_known_host(file: &Path, server: &str) -> Result<Option<[u8; 32]>, String> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read known_servers {}: {e}", file.display())),
    };
    for (number, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let (Some(key), Some(fp)) = (words.next(), words.next()) else {
            continue;
        };
        if key.starts_with('#') || !key.eq_ignore_ascii_case(server) {
            continue;
        }
        return parse_fingerprint(fp).map(Some).map_err(|_| {
            format!(
                "{}:{}: bad fingerprint for {server}; fix or remove that line",
                file.display(),
                number + 1
            )
        });
    }
    Ok(None)
}

fn append_known_host(file: &Path, server: &str, fingerprint: &str) -> io::Result<()> {
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    let mut line = format!("{server} {fingerprint}\n");
    match fs::read(file) {
        Ok(old) if !old.is_empty() && !old.ends_with(b"\n") => line.insert(0, '\n'),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            line.insert_str(
                0,
                "# burrow known servers: host:port sha256:<fingerprint>\n",
            );
        }
        Err(e) => return Err(e),
    }
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    set_mode(&mut options, 0o600);
    options.open(file)?.write_all(line.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// A directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let name = format!(
                "burrow-tls-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Runs one handshake over an in-memory pipe and returns the client's result.
    async fn handshake(
        identity: &ServerIdentity,
        client: Arc<rustls::ClientConfig>,
        host: &str,
    ) -> io::Result<()> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(identity.config());
        let connector = TlsConnector::from(client);
        let name = server_name(host).unwrap();
        let (client_side, _server_side) = tokio::join!(
            connector.connect(name, client_io),
            acceptor.accept(server_io)
        );
        let stream = client_side?;
        let version = stream.get_ref().1.protocol_version();
        assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
        Ok(())
    }

    fn identity_in(dir: &TempDir, sub: &str) -> ServerIdentity {
        ServerIdentity::load_or_generate(&dir.0.join(sub)).unwrap()
    }

    #[test]
    fn generated_identity_reloads_with_same_fingerprint() {
        let dir = TempDir::new();
        let first = identity_in(&dir, "state");
        let fp = first.fingerprint();
        assert!(fp.starts_with("sha256:") && fp.len() == 71, "{fp}");
        assert!(
            fp[7..]
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        assert_eq!(identity_in(&dir, "state").fingerprint(), fp);
        let pem = fs::read(dir.0.join("state").join(CERT_FILE)).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(fingerprint_of(&der), fp);
    }

    #[cfg(unix)]
    #[test]
    fn generated_files_have_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new();
        let state = dir.0.join("state");
        identity_in(&dir, "state");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&state.join(CERT_FILE)) & 0o600, 0o600);
    }

    #[test]
    fn half_identity_and_bad_files_are_named_in_errors() {
        let dir = TempDir::new();
        let state = dir.0.join("state");
        identity_in(&dir, "state");
        identity_in(&dir, "other");
        let (cert, key) = (state.join(CERT_FILE), state.join(KEY_FILE));
        let other_key = dir.0.join("other").join(KEY_FILE);
        let garbage = dir.0.join("garbage.pem");
        fs::write(&garbage, "not a pem file\n").unwrap();
        let err = |r: anyhow::Result<ServerIdentity>| format!("{:#}", r.unwrap_err());

        let msg = err(ServerIdentity::from_pem_files(&cert, &other_key));
        assert!(
            msg.contains("does not match") && msg.contains("other"),
            "{msg}"
        );
        let msg = err(ServerIdentity::from_pem_files(&garbage, &key));
        assert!(
            msg.contains("no PEM certificate") && msg.contains("garbage.pem"),
            "{msg}"
        );
        let msg = err(ServerIdentity::from_pem_files(&cert, &garbage));
        assert!(
            msg.contains("no PEM private key") && msg.contains("garbage.pem"),
            "{msg}"
        );
        let missing = dir.0.join("missing.pem");
        let msg = err(ServerIdentity::from_pem_files(&missing, &key));
        assert!(msg.contains("missing.pem"), "{msg}");

        fs::remove_file(&cert).unwrap();
        let msg = err(ServerIdentity::load_or_generate(&state));
        assert!(
            msg.contains("server.crt") && msg.contains("server.key"),
            "{msg}"
        );
    }

    #[test]
    fn parse_fingerprint_accepts_user_forms() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let want = parse_fingerprint(hex).unwrap();
        assert_eq!(want[1], 0x11);
        assert_eq!(want[31], 0xff);
        let colons = hex
            .as_bytes()
            .chunks(2)
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        for form in [
            format!("sha256:{hex}"),
            format!("SHA256:{}", hex.to_uppercase()),
            format!(" {colons} "),
            format!("sha256:{}", colons.to_uppercase()),
        ] {
            assert_eq!(parse_fingerprint(&form).unwrap(), want, "{form}");
        }
        assert_eq!(format_fingerprint(&want), format!("sha256:{hex}"));
        for bad in [
            "",
            "sha256:",
            "md5:00",
            &hex[..62],
            &format!("{hex}00"),
            "zz",
        ] {
            let msg = parse_fingerprint(bad).unwrap_err().to_string();
            assert!(msg.contains("64 hex digits"), "{bad}: {msg}");
        }
        assert!(parse_fingerprint(&format!("sha1:{hex}")).is_err());
    }

    #[test]
    fn server_name_kinds() {
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("example.net").unwrap(),
            ServerName::DnsName(_)
        ));
        let msg = server_name("bad name!").unwrap_err().to_string();
        assert!(msg.contains("bad name!"), "{msg}");
    }

    #[test]
    fn known_hosts_skips_comments_and_other_servers() {
        let dir = TempDir::new();
        let file = dir.0.join("known_servers");
        let fp = format!("sha256:{}", "ab".repeat(32));
        let text = format!(
            "# comment {fp}\n\nother:1 sha256:{}\nHOST:7777   {fp}\n",
            "cd".repeat(32)
        );
        fs::write(&file, text).unwrap();
        assert_eq!(
            read_known_host(&file, "host:7777").unwrap(),
            Some([0xab; 32])
        );
        assert_eq!(read_known_host(&file, "host:7778").unwrap(), None);
        fs::write(&file, "host:7777 sha256:nope\n").unwrap();
        let msg = read_known_host(&file, "host:7777").unwrap_err();
        assert!(msg.contains("known_servers:1"), "{msg}");
    }

    #[tokio::test]
    async fn a_second_connection_resumes_the_session() {
        use rustls::HandshakeKind;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = TempDir::new();
        let identity = identity_in(&dir, "state");
        let pin = Trust::Fingerprint(identity.fingerprint().to_owned());
        let config = client_config(&pin, "127.0.0.1:7777").unwrap();
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            let connector = TlsConnector::from(config.clone());
            let acceptor = TlsAcceptor::from(identity.config());
            let (c, s) = tokio::join!(
                connector.connect(server_name("127.0.0.1").unwrap(), client_io),
                acceptor.accept(server_io)
            );
            let (mut c, mut s) = (c.unwrap(), s.unwrap());
            // Reading after the handshake also takes in the server's session tickets.
            s.write_all(b"x").await.unwrap();
            s.flush().await.unwrap();
            c.read_exact(&mut [0u8; 1]).await.unwrap();
            kinds.push(c.get_ref().1.handshake_kind());
        }
        assert_eq!(
            kinds,
            [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)]
        );
    }

    #[tokio::test]
    async fn pinned_fingerprint_accepts_only_that_server() {
        let dir = TempDir::new();
        let identity = identity_in(&dir, "state");
        let pin = Trust::Fingerprint(identity.fingerprint().to_uppercase());
        let config = client_config(&pin, "127.0.0.1:7777").unwrap();
        handshake(&identity, config, "127.0.0.1").await.unwrap();

        let wrong = Trust::Fingerprint(format!("sha256:{}", "00".repeat(32)));
        let config = client_config(&wrong, "127.0.0.1:7777").unwrap();
        let err = handshake(&identity, config, "127.0.0.1").await.unwrap_err();
        assert!(is_trust_error(&err), "{err}");
        let msg = trust_error_message(&err).unwrap();
        assert!(msg.contains("does not match the pinned"), "{msg}");
        assert!(msg.contains(identity.fingerprint()), "{msg}");
        assert!(!is_trust_error(&io::Error::other("connection reset")));
        assert!(client_config(&Trust::Fingerprint("abc".into()), "h:1").is_err());
    }

    #[tokio::test]
    async fn first_use_records_then_refuses_a_changed_identity() {
        let dir = TempDir::new();
        let file = dir.0.join("config").join("burrow").join("known_servers");
        let trust = Trust::FirstUse {
            known_hosts: file.clone(),
        };
        let first = identity_in(&dir, "first");
        let config = client_config(&trust, "LocalHost:7777").unwrap();
        handshake(&first, config, "localhost").await.unwrap();
        let text = fs::read_to_string(&file).unwrap();
        let line = format!("localhost:7777 {}", first.fingerprint());
        assert!(text.lines().any(|l| l == line), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let config = client_config(&trust, "localhost:7777").unwrap();
        handshake(&first, config, "localhost").await.unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), text, "no second entry");

        let second = identity_in(&dir, "second");
        let config = client_config(&trust, "localhost:7777").unwrap();
        let err = handshake(&second, config, "localhost").await.unwrap_err();
        assert!(is_trust_error(&err), "{err}");
        let msg = trust_error_message(&err).unwrap();
        assert!(msg.contains("fingerprint changed"), "{msg}");
        assert!(msg.contains(first.fingerprint()) && msg.contains(second.fingerprint()));
        assert!(msg.contains("remove the line for localhost:7777"), "{msg}");
        assert!(msg.contains(&file.display().to_string()), "{msg}");

        // Another server is a separate entry, trusted on its own first use.
        let config = client_config(&trust, "localhost:7778").unwrap();
        handshake(&second, config, "localhost").await.unwrap();
    }

    /// Writes a CA and a leaf for `tunnel.example` it signed; returns the CA file and identity.
    fn ca_and_leaf(dir: &TempDir) -> (PathBuf, ServerIdentity) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, &ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params = CertificateParams::new(vec!["tunnel.example".to_owned()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

        let ca_file = dir.0.join("ca.pem");
        let (chain, key) = (dir.0.join("chain.pem"), dir.0.join("leaf.key"));
        fs::write(&ca_file, ca_cert.pem()).unwrap();
        fs::write(&chain, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
        fs::write(&key, leaf_key.serialize_pem()).unwrap();
        (
            ca_file,
            ServerIdentity::from_pem_files(&chain, &key).unwrap(),
        )
    }

    #[tokio::test]
    async fn ca_file_checks_chain_and_name() {
        let dir = TempDir::new();
        let (ca_file, identity) = ca_and_leaf(&dir);
        let trust = Trust::CaFile(ca_file);
        let config = client_config(&trust, "tunnel.example:7777").unwrap();
        handshake(&identity, config.clone(), "tunnel.example")
            .await
            .unwrap();

        let err = handshake(&identity, config, "other.example")
            .await
            .unwrap_err();
        assert!(is_trust_error(&err), "{err}");
        let msg = trust_error_message(&err).unwrap();
        assert!(msg.contains("other.example"), "{msg}");

        // A self-signed server is not vouched for by the CA.
        let stranger = identity_in(&dir, "stranger");
        let config = client_config(&trust, "localhost:7777").unwrap();
        let err = handshake(&stranger, config, "localhost").await.unwrap_err();
        assert!(is_trust_error(&err), "{err}");

        let missing = Trust::CaFile(dir.0.join("missing.pem"));
        let msg = format!("{:#}", client_config(&missing, "h:1").unwrap_err());
        assert!(msg.contains("missing.pem"), "{msg}");
    }
}
