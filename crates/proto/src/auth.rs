//! Challenge–response authentication and the per-session secret.
//!
//! The login token never crosses the wire. A control hello carries
//! `HMAC(token, "burrow/1 control" ‖ name ‖ server nonce ‖ client nonce)`; both sides then derive
//! the session secret `HMAC(token, "burrow/1 session" ‖ server nonce ‖ client nonce)`, and every
//! data connection proves membership with `HMAC(secret, "burrow/1 data" ‖ session ‖ its own
//! server nonce)`. A proof is bound to a nonce the server chose for that connection, so a
//! recorded proof is worthless on another connection.
//!
//! A data connection may instead send an *early* hello, before the server has said anything:
//! `HMAC(secret, "burrow/1 early data" ‖ session ‖ seq)`, where `seq` numbers the session's data
//! connections. The server takes each number once ([`SeqWindow`]), so a recorded early proof is
//! worthless too: it names a number already used.

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

    /// The proof an early data hello of `session` carries for its sequence number `seq`.
    pub fn early_proof(&self, session: u64, seq: u64) -> Bytes32 {
        mac_with(
            &self.0,
            &[
                b"burrow/1 early data",
                &session.to_be_bytes(),
                &seq.to_be_bytes(),
            ],
        )
    }
}

/// The early-hello sequence numbers a session has taken, so each is taken once.
///
/// The client numbers its data connections 1, 2, 3, … as it dials them; they may arrive out of
/// order (several are dialed at once), so the window remembers [`SeqWindow::SPAN`] numbers, the
/// highest taken and the `SPAN - 1` below it, one bit each, as IPsec's anti-replay window does
/// (RFC 4303 §3.4.3, RFC 6479). A number below the window is refused: it is either used or so
/// late that its connection is better dialed again.
#[derive(Debug, Clone)]
pub struct SeqWindow {
    /// The highest number taken; 0 before the first.
    top: u64,
    /// Bit `seq % SPAN` is set when `seq` (within the window) was taken.
    seen: [u64; Self::WORDS],
}

impl SeqWindow {
    const WORDS: usize = 16;
    /// How many numbers the window holds: the highest taken and the `SPAN - 1` below it.
    pub const SPAN: u64 = 64 * Self::WORDS as u64;

    /// A window that has taken nothing.
    pub fn new() -> Self {
        Self {
            top: 0,
            seen: [0; Self::WORDS],
        }
    }

    /// Takes `seq`: true the first time, false when it was taken before, is 0, or is too old.
    pub fn take(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            if seq - self.top >= Self::SPAN {
                self.seen = [0; Self::WORDS];
            } else {
                // Numbers between the old top and `seq` were never taken: clear their bits,
                // which still hold those of numbers one span older.
                for skipped in self.top + 1..seq {
                    self.set(skipped, false);
                }
            }
            self.top = seq;
            self.set(seq, true);
            return true;
        }
        if self.top - seq >= Self::SPAN || self.get(seq) {
            return false;
        }
        self.set(seq, true);
        true
    }

    fn slot(seq: u64) -> (usize, u64) {
        let bit = seq % Self::SPAN;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn get(&self, seq: u64) -> bool {
        let (word, mask) = Self::slot(seq);
        self.seen[word] & mask != 0
    }

    fn set(&mut self, seq: u64, on: bool) {
        let (word, mask) = Self::slot(seq);
        if on {
            self.seen[word] |= mask;
        } else {
            self.seen[word] &= !mask;
        }
    }
}

impl Default for SeqWindow {
    fn default() -> Self {
        Self::new()
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
    fn early_proofs_depend_on_session_and_seq_and_differ_from_challenge_proofs() {
        let key = DataKey::new(&Secret::new("session-secret"));
        let p = key.early_proof(1, 5);
        assert!(proofs_match(&p, &key.early_proof(1, 5)));
        assert!(!proofs_match(&p, &key.early_proof(1, 6)));
        assert!(!proofs_match(&p, &key.early_proof(2, 5)));
        assert!(!proofs_match(
            &p,
            &DataKey::new(&Secret::new("other")).early_proof(1, 5)
        ));
        // A challenge that spells the same bytes as the sequence number proves something else.
        let mut challenge = [0u8; NONCE_LEN];
        challenge[NONCE_LEN - 8..].copy_from_slice(&5u64.to_be_bytes());
        assert!(!proofs_match(&p, &key.proof(1, &challenge)));
    }

    #[test]
    fn a_sequence_number_is_taken_once_in_any_order_within_the_window() {
        let mut w = SeqWindow::new();
        assert!(!w.take(0), "0 is never a sequence number");
        assert!(w.take(1));
        assert!(!w.take(1), "a replay");
        // Out of order: 3 and 4 arrive before 2.
        assert!(w.take(3));
        assert!(w.take(4));
        assert!(w.take(2));
        assert!(!w.take(2));
        assert!(!w.take(3));
        assert!(!w.take(4));
        // A jump leaves the numbers it skipped takeable, once.
        assert!(w.take(100));
        assert!(w.take(50));
        assert!(!w.take(50));
        assert!(w.take(99));
        // The window's bottom: SPAN - 1 below the top is still taken, SPAN below is too old.
        let top = 100 + SeqWindow::SPAN - 1;
        assert!(w.take(top));
        assert!(
            !w.take(100),
            "SPAN - 1 below the top, inside the window, taken before"
        );
        assert!(!w.take(99), "SPAN below the top: too old");
        assert!(w.take(top + 1));
        assert!(!w.take(100), "now SPAN below the top: too old");
        assert!(
            w.take(101),
            "the window's bottom, skipped by the jump: taken once"
        );
        assert!(!w.take(101));
    }

    #[test]
    fn a_large_jump_forgets_the_old_window_but_never_reopens_old_numbers() {
        let mut w = SeqWindow::new();
        for seq in 1..=10 {
            assert!(w.take(seq));
        }
        let far = 10 + 5 * SeqWindow::SPAN;
        assert!(w.take(far));
        for seq in 1..=10 {
            assert!(!w.take(seq), "{seq} is below the window now");
        }
        assert!(!w.take(far));
        assert!(w.take(far - 1));
        // `far - 9` shares its bit with 1, taken before the jump: the jump cleared it.
        assert_eq!((far - 9) % SeqWindow::SPAN, 1);
        assert!(w.take(far - 9));
        assert!(!w.take(far - 9));
    }

    #[test]
    fn the_window_works_up_to_the_last_number() {
        let mut w = SeqWindow::new();
        assert!(w.take(u64::MAX - 3));
        assert!(w.take(u64::MAX));
        assert!(!w.take(u64::MAX));
        assert!(w.take(u64::MAX - 1));
        assert!(!w.take(u64::MAX - 3));
        assert!(w.take(u64::MAX - 2));
        assert!(!w.take(u64::MAX - SeqWindow::SPAN));
        assert!(w.take(u64::MAX - SeqWindow::SPAN + 1));
    }

    #[test]
    fn every_number_in_a_long_shuffled_run_is_taken_exactly_once() {
        let mut w = SeqWindow::new();
        // Dialed in order, arriving up to 40 apart: blocks of 40 reversed.
        let mut order: Vec<u64> = Vec::new();
        for block in 0..200u64 {
            order.extend((block * 40 + 1..=block * 40 + 40).rev());
        }
        for &seq in &order {
            assert!(w.take(seq), "{seq} refused the first time");
        }
        for &seq in order.iter().rev().take(SeqWindow::SPAN as usize) {
            assert!(!w.take(seq), "{seq} taken twice");
        }
    }

    #[test]
    fn secret_debug_is_masked() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
