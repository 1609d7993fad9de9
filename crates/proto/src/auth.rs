//! Challenge–response authentication and the per-session secret.
//!
//! The login token never crosses the wire. A control hello carries
//! `HMAC(token, "burrow/1 control" ‖ name ‖ server nonce ‖ client nonce)`; both sides then derive
//! the session secret `HMAC(token, "burrow/1 session" ‖ server nonce ‖ client nonce)`, and every
//! data connection proves membership with `HMAC(secret, "burrow/1 data" ‖ session ‖ its own
//! server nonce)`. A proof is bound to a nonce the server chose for that connection, so a
//! recorded proof is worthless on another connection.

use crate::msg::{Bytes32, NONCE_LEN};
use aws_lc_rs::{constant_time, hmac, rand};

/// A secret that must never be printed: `Debug` shows only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The raw bytes, for keying an HMAC.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// True when the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A fresh random nonce.
pub fn nonce() -> Bytes32 {
    let mut out = [0u8; NONCE_LEN];
    // The system RNG failing is unrecoverable for a security tool; aws-lc aborts rather than
    // returning weak bytes, so this error path is only theoretical.
    if rand::fill(&mut out).is_err() {
        std::process::abort();
    }
    out
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Bytes32 {
    mac_with(&hmac::Key::new(hmac::HMAC_SHA256, key), parts)
}

/// HMAC-SHA256 over `parts`, each length-prefixed so concatenations cannot be confused. The
/// prefixed parts are gathered in a stack buffer first: one update instead of two per part,
/// which for a short message costs more than the hashing itself.
fn mac_with(key: &hmac::Key, parts: &[&[u8]]) -> Bytes32 {
    let mut ctx = hmac::Context::with_key(key);
    let mut buf = [0u8; 128];
    let mut len = 0;
    for part in parts {
        let prefix = (part.len() as u32).to_be_bytes();
        for piece in [&prefix[..], part] {
            if len + piece.len() > buf.len() {
                ctx.update(&buf[..len]);
                len = 0;
            }
            if piece.len() > buf.len() {
                ctx.update(piece);
            } else {
                buf[len..len + piece.len()].copy_from_slice(piece);
                len += piece.len();
            }
        }
    }
    ctx.update(&buf[..len]);
    let mut out = [0u8; NONCE_LEN];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// A session secret keyed for data proofs once per session: setting up an HMAC key hashes two
/// blocks, as much as the proof itself, and a session proves itself on every data connection.
#[derive(Clone)]
pub struct DataKey(std::sync::Arc<hmac::Key>);

impl DataKey {
    /// Keys `secret` for [`DataKey::proof`].
    pub fn new(secret: &Secret) -> Self {
        Self(std::sync::Arc::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            secret.expose(),
        )))
    }

    /// The proof a data hello of `session` carries on the connection whose server nonce is
    /// `server`; the same as [`data_proof`] with the secret this key was made from.
    pub fn proof(&self, session: u64, server: &Bytes32) -> Bytes32 {
        mac_with(&self.0, &[b"burrow/1 data", &session.to_be_bytes(), server])
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(***)")
    }
}

/// The proof a control hello carries.
pub fn control_proof(token: &Secret, name: &str, server: &Bytes32, client: &Bytes32) -> Bytes32 {
    mac(
        token.expose(),
        &[b"burrow/1 control", name.as_bytes(), server, client],
    )
}

/// The secret both sides derive once a control hello is accepted.
pub fn session_secret(token: &Secret, server: &Bytes32, client: &Bytes32) -> Secret {
    Secret::new(mac(token.expose(), &[b"burrow/1 session", server, client]).to_vec())
}

/// The proof a data hello carries.
pub fn data_proof(secret: &Secret, session: u64, server: &Bytes32) -> Bytes32 {
    DataKey::new(secret).proof(session, server)
}

/// Compares two secrets in constant time (different lengths never match).
pub fn secrets_match(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Compares two proofs in constant time.
pub fn proofs_match(a: &Bytes32, b: &Bytes32) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_depend_on_every_input() {
        let t = Secret::new("token");
        let (s, c) = (nonce(), nonce());
        let p = control_proof(&t, "alice", &s, &c);
        assert!(proofs_match(&p, &control_proof(&t, "alice", &s, &c)));
        assert!(!proofs_match(
            &p,
            &control_proof(&Secret::new("other"), "alice", &s, &c)
        ));
        assert!(!proofs_match(&p, &control_proof(&t, "bob", &s, &c)));
        assert!(!proofs_match(&p, &control_proof(&t, "alice", &nonce(), &c)));
        assert!(!proofs_match(&p, &control_proof(&t, "alice", &s, &nonce())));
    }

    #[test]
    fn data_proof_is_not_the_token() {
        let t = Secret::new("token");
        let (s, c) = (nonce(), nonce());
        let secret = session_secret(&t, &s, &c);
        assert_ne!(secret, t);
        let n = nonce();
        assert!(proofs_match(
            &data_proof(&secret, 1, &n),
            &data_proof(&secret, 1, &n)
        ));
        assert!(!proofs_match(
            &data_proof(&secret, 1, &n),
            &data_proof(&secret, 2, &n)
        ));
        assert!(!proofs_match(
            &data_proof(&secret, 1, &n),
            &data_proof(&t, 1, &n)
        ));
    }

    /// The proofs are HMAC-SHA256 over the length-prefixed parts, however they are fed in: a
    /// one-shot HMAC over the concatenation gives the same bytes, so peers of other builds agree.
    #[test]
    fn proofs_are_hmac_over_length_prefixed_parts() {
        fn reference(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut msg = Vec::new();
            for part in parts {
                msg.extend_from_slice(&(part.len() as u32).to_be_bytes());
                msg.extend_from_slice(part);
            }
            let key = hmac::Key::new(hmac::HMAC_SHA256, key);
            hmac::sign(&key, &msg).as_ref().to_vec()
        }
        let secret = Secret::new("session-secret");
        let (s, c) = (nonce(), nonce());
        let session = 0x0123_4567_89ab_cdef_u64;
        let want = reference(
            secret.expose(),
            &[b"burrow/1 data", &session.to_be_bytes(), &s],
        );
        assert_eq!(data_proof(&secret, session, &s).to_vec(), want);
        assert_eq!(DataKey::new(&secret).proof(session, &s).to_vec(), want);
        // A part longer than the gathering buffer goes through on its own.
        let long = "n".repeat(300);
        let want = reference(b"token", &[b"burrow/1 control", long.as_bytes(), &s, &c]);
        assert_eq!(
            control_proof(&Secret::new("token"), &long, &s, &c).to_vec(),
            want
        );
    }

    #[test]
    fn secret_debug_is_masked() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
