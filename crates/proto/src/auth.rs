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
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for part in parts {
        // Length-prefix each part so concatenations cannot be confused.
        ctx.update(&(part.len() as u32).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; NONCE_LEN];
    out.copy_from_slice(ctx.sign().as_ref());
    out
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
    mac(
        secret.expose(),
        &[b"burrow/1 data", &session.to_be_bytes(), server],
    )
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

    #[test]
    fn secret_debug_is_masked() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
