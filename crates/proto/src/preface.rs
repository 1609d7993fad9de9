//! The fixed-size preface that opens every connection, in both directions.
//!
//! It is the one part of the protocol that never changes shape, so two builds of any version can
//! always tell each other which one is older. Its first bytes also let a server recognise the two
//! most common misconfigurations: a TLS client on a plain port, and an HTTP client.

/// Magic bytes at the start of every preface. The CR LF catches line-ending mangling.
pub const MAGIC: [u8; 8] = *b"BURROW\r\n";

/// Length of an encoded preface: magic, version (u16 BE), capability bits (u32 BE).
pub const PREFACE_LEN: usize = MAGIC.len() + 2 + 4;

/// What each side announces before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preface {
    /// Protocol version of the sender.
    pub version: u16,
    /// Capability bits of the sender (see [`crate::caps`]).
    pub caps: u32,
}

/// Why a preface could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefaceError {
    /// The bytes look like a TLS record: the peer speaks TLS and this side expected plain TCP.
    #[error(
        "the peer speaks TLS on a plain-TCP burrow port (drop --insecure-plain on one side, or use it on both)"
    )]
    LooksLikeTls,
    /// The bytes look like an HTTP request.
    #[error("the peer sent an HTTP request, not a burrow preface")]
    LooksLikeHttp,
    /// Anything else that is not a burrow preface.
    #[error("the peer is not a burrow endpoint (bad preface)")]
    BadMagic,
}

impl Preface {
    /// This build's preface.
    pub fn ours() -> Self {
        Self {
            version: crate::VERSION,
            caps: crate::caps::ALL,
        }
    }

    /// Encodes the preface into its fixed wire form.
    pub fn encode(&self) -> [u8; PREFACE_LEN] {
        let mut out = [0u8; PREFACE_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&self.version.to_be_bytes());
        out[10..14].copy_from_slice(&self.caps.to_be_bytes());
        out
    }

    /// Decodes a preface, naming the likely culprit when the magic is wrong.
    pub fn decode(buf: &[u8; PREFACE_LEN]) -> Result<Self, PrefaceError> {
        if buf[..8] != MAGIC {
            return Err(classify_foreign(buf));
        }
        let version = u16::from_be_bytes([buf[8], buf[9]]);
        let caps = u32::from_be_bytes([buf[10], buf[11], buf[12], buf[13]]);
        Ok(Self { version, caps })
    }
}

/// Guesses what a non-burrow peer is from its first bytes, for a useful error.
fn classify_foreign(buf: &[u8]) -> PrefaceError {
    // A TLS record: handshake (22) or alert (21), major version 3.
    if matches!(buf[0], 21 | 22) && buf[1] == 3 {
        return PrefaceError::LooksLikeTls;
    }
    const METHODS: [&[u8]; 6] = [b"GET ", b"POST", b"PUT ", b"HEAD", b"CONN", b"OPTI"];
    if METHODS.iter().any(|m| buf.starts_with(m)) {
        return PrefaceError::LooksLikeHttp;
    }
    PrefaceError::BadMagic
}

/// Explains a version mismatch in terms of which side to upgrade.
pub fn version_advice(ours: u16, theirs: u16, we_are_server: bool) -> String {
    let (older, newer) = match (ours < theirs, we_are_server) {
        (true, true) | (false, false) => ("server", "client"),
        (true, false) | (false, true) => ("client", "server"),
    };
    let (server, client) = if we_are_server {
        (ours, theirs)
    } else {
        (theirs, ours)
    };
    format!(
        "protocol version mismatch: server speaks v{server}, client speaks v{client}; \
         upgrade the {older} (the {newer} is newer)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = Preface {
            version: 7,
            caps: 0xdead_beef,
        };
        assert_eq!(Preface::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn recognises_tls_and_http() {
        let mut tls = [0u8; PREFACE_LEN];
        tls[..3].copy_from_slice(&[22, 3, 1]);
        assert_eq!(Preface::decode(&tls), Err(PrefaceError::LooksLikeTls));
        let mut http = [0u8; PREFACE_LEN];
        http[..14].copy_from_slice(b"GET / HTTP/1.1");
        assert_eq!(Preface::decode(&http), Err(PrefaceError::LooksLikeHttp));
        assert_eq!(
            Preface::decode(&[7u8; PREFACE_LEN]),
            Err(PrefaceError::BadMagic)
        );
    }

    #[test]
    fn advice_names_the_older_side() {
        assert!(version_advice(1, 2, true).contains("upgrade the server"));
        assert!(version_advice(2, 1, true).contains("upgrade the client"));
        assert!(version_advice(1, 2, false).contains("upgrade the client"));
        assert!(version_advice(2, 1, false).contains("upgrade the server"));
    }
}
