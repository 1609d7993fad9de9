//! The server's side of the connection handshake, over any byte stream.
//!
//! preface ⇄ preface, challenge →, ← hello; the verdict says whether the connection opens a new
//! session or joins an existing one as a data connection. The caller runs this under the
//! pre-auth deadline and answers with [`send_welcome`] once the verdict is acted on, so a session
//! is registered before its client can open data connections. A data connection may instead
//! send its preface and an early hello together (`caps::EARLY_HELLO`): the server reads both and
//! answers nothing, neither on success nor on refusal (it closes the connection).

use burrow_net::{
    FrameIo, MAX_AFTER_PREFACE, read_frame, read_preface_with, write_frame, write_preface,
};
use burrow_proto::auth::{self, Secret};
use burrow_proto::frame::{HEADER_LEN, payload_len};
use burrow_proto::msg::{Challenge, HandshakeError, Hello, MAX_NAME_LEN, Welcome};
use burrow_proto::preface::version_advice;
use burrow_proto::{Preface, PrefaceError, VERSION, caps, decode_payload, encode_frame};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What the server knows that a handshake needs.
pub(crate) trait Authority: Sync {
    /// The token of the identity `name`, or `None` when there is no such identity.
    fn token_for(&self, name: &str) -> Option<Secret>;
    /// The data-proof key of a live session.
    fn data_key(&self, session: u64) -> Option<auth::DataKey>;
    /// Takes an early hello's sequence number for a live session: `Some(false)` when the number
    /// was taken before (or is too old; see [`auth::SeqWindow`]), `None` when the session is gone
    /// (it may have ended since its key was looked up).
    fn take_seq(&self, session: u64, seq: u64) -> Option<bool>;
}

/// A successful handshake.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// A new session for `identity`, with the secret both sides derived.
    Control {
        /// Identity name.
        identity: String,
        /// Per-session secret for data connections.
        secret: Secret,
        /// The capability bits of the client's preface (see `caps::SERVER_STREAMS`).
        caps: u32,
    },
    /// A data connection of a live session.
    Data {
        /// The session it joins.
        session: u64,
        /// It came with an early hello: the client expects no welcome.
        early: bool,
    },
    /// A multiplexed link: the prefaces are exchanged, and the connection now carries a yamux
    /// session whose streams each begin a handshake of their own.
    Link,
}

/// Why a handshake failed; each is logged once by the caller, and only this connection closes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// Not a burrow client at all.
    #[error("{0}")]
    Foreign(PrefaceError),
    /// A burrow client of another protocol version.
    #[error("{0}")]
    Version(String),
    /// Authentication failed; the client was told only that.
    #[error("authentication failed for identity `{0}`")]
    Auth(String),
    /// A data connection for a session that does not exist.
    #[error("data connection for unknown session {0:#x}")]
    UnknownSession(u64),
    /// The hello was not understood.
    #[error("malformed hello: {0}")]
    Malformed(String),
    /// The connection failed or closed mid-handshake.
    #[error("connection closed during handshake: {0}")]
    Io(std::io::Error),
}

impl From<FrameIo> for Failure {
    fn from(e: FrameIo) -> Self {
        match e {
            FrameIo::Io(e) => Failure::Io(e),
            FrameIo::Preface(p) => Failure::Foreign(p),
            FrameIo::Frame(f) => Failure::Malformed(f.to_string()),
        }
    }
}

/// Whether a connection may, or must, ask to become a multiplexed link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// The control port: a connection, or a link.
    Allowed,
    /// A stream inside a link: never a link itself.
    Refused,
    /// A WebSocket: only a link.
    Required,
}

/// Runs the handshake; on failure the client has already been told what it may know.
pub(crate) async fn accept<S>(
    io: &mut S,
    authority: &dyn Authority,
    links: Links,
) -> Result<Verdict, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A client sends at most an early hello with its preface, and then waits: reading what
    // came with the preface never takes a byte that belongs to anything else.
    let mut after = [0u8; MAX_AFTER_PREFACE];
    let (theirs, filled) = read_preface_with(io, &mut after).await?;
    if theirs.version != VERSION {
        // Our preface alone tells the client which side is older.
        write_preface(io).await.map_err(Failure::Io)?;
        return Err(Failure::Version(version_advice(
            VERSION,
            theirs.version,
            true,
        )));
    }
    if theirs.caps & caps::EARLY_HELLO != 0 {
        if theirs.caps & caps::LINK != 0 || links == Links::Required {
            return Err(Failure::Malformed(
                "an early data hello on a connection that must be a link".into(),
            ));
        }
        return early_data(io, authority, &mut after, filled).await;
    }
    if filled > 0 {
        return Err(Failure::Malformed(
            "bytes after the preface, before the challenge".into(),
        ));
    }
    match (theirs.caps & caps::LINK != 0, links) {
        (true, Links::Refused) => {
            return Err(Failure::Malformed(
                "a stream of a multiplexed connection asked to be one itself".into(),
            ));
        }
        (true, _) => {
            write_preface(io).await.map_err(Failure::Io)?;
            return Ok(Verdict::Link);
        }
        (false, Links::Required) => {
            // Refused before the challenge: no login runs on a connection that cannot be used.
            return Err(Failure::Malformed(
                "a WebSocket carries only multiplexed links (a client older than the ws carrier?)"
                    .into(),
            ));
        }
        (false, _) => {}
    }
    // Preface and challenge leave in one write (one TLS record, one wake-up at the client).
    let nonce = auth::nonce();
    let mut first = Preface::ours().encode().to_vec();
    let challenge =
        encode_frame(&Challenge { nonce }).map_err(|e| Failure::Malformed(e.to_string()))?;
    first.extend_from_slice(&challenge);
    io.write_all(&first).await.map_err(Failure::Io)?;
    io.flush().await.map_err(Failure::Io)?;
    let hello = match read_frame::<_, Hello>(io).await {
        Ok(hello) => hello,
        Err(FrameIo::Frame(e)) => {
            refuse(io, HandshakeError::Malformed).await;
            return Err(Failure::Malformed(e.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    match hello {
        Hello::Control {
            name,
            nonce: client_nonce,
            proof,
        } => {
            // Unknown names are checked against a throwaway key so every failure costs the same.
            let known = authority.token_for(&name).filter(|_| valid_name(&name));
            let token = known
                .clone()
                .unwrap_or_else(|| Secret::new(auth::nonce().to_vec()));
            let expected = auth::control_proof(&token, &name, &nonce, &client_nonce);
            if known.is_none() || !auth::proofs_match(&expected, &proof) {
                refuse(io, HandshakeError::AuthFailed).await;
                return Err(Failure::Auth(printable(&name)));
            }
            let secret = auth::session_secret(&token, &nonce, &client_nonce);
            Ok(Verdict::Control {
                identity: name,
                secret,
                caps: theirs.caps,
            })
        }
        Hello::Data { session, proof } => {
            let Some(key) = authority.data_key(session) else {
                refuse(io, HandshakeError::UnknownSession).await;
                return Err(Failure::UnknownSession(session));
            };
            if !auth::proofs_match(&key.proof(session, &nonce), &proof) {
                refuse(io, HandshakeError::AuthFailed).await;
                return Err(Failure::Auth(format!(
                    "data connection of session {session:#x}"
                )));
            }
            Ok(Verdict::Data {
                session,
                early: false,
            })
        }
        Hello::EarlyData { .. } => Err(Failure::Malformed(
            "an early data hello after a challenge".into(),
        )),
    }
}

/// Longest early hello frame: header, variant, two `u64` varints (10 bytes at most each), proof.
const EARLY_FRAME_MAX: usize = HEADER_LEN + 1 + 10 + 10 + burrow_proto::msg::NONCE_LEN;

/// The rest of an early data connection: its hello, of which `after[..filled]` came with the
/// preface. Nothing is written back, whatever the outcome.
async fn early_data<S>(
    io: &mut S,
    authority: &dyn Authority,
    after: &mut [u8; MAX_AFTER_PREFACE],
    mut filled: usize,
) -> Result<Verdict, Failure>
where
    S: AsyncRead + Unpin,
{
    const _: () = assert!(EARLY_FRAME_MAX <= MAX_AFTER_PREFACE);
    if filled < HEADER_LEN {
        io.read_exact(&mut after[filled..HEADER_LEN])
            .await
            .map_err(Failure::Io)?;
        filled = HEADER_LEN;
    }
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&after[..HEADER_LEN]);
    let len = payload_len(header).map_err(|e| Failure::Malformed(e.to_string()))?;
    let end = HEADER_LEN + len;
    if end > EARLY_FRAME_MAX {
        return Err(Failure::Malformed(format!(
            "an early hello of {len} bytes (at most {})",
            EARLY_FRAME_MAX - HEADER_LEN
        )));
    }
    if filled > end {
        return Err(Failure::Malformed(
            "bytes after the early hello, before any stream".into(),
        ));
    }
    io.read_exact(&mut after[filled..end])
        .await
        .map_err(Failure::Io)?;
    let hello = decode_payload::<Hello>(&after[HEADER_LEN..end])
        .map_err(|e| Failure::Malformed(e.to_string()))?;
    let Hello::EarlyData {
        session,
        seq,
        proof,
    } = hello
    else {
        return Err(Failure::Malformed(
            "an early preface followed by another hello than an early data hello".into(),
        ));
    };
    let Some(key) = authority.data_key(session) else {
        return Err(Failure::UnknownSession(session));
    };
    if !auth::proofs_match(&key.early_proof(session, seq), &proof) {
        return Err(Failure::Auth(format!(
            "early data connection of session {session:#x}"
        )));
    }
    // Taken only once proven, so nobody without the secret can use up a session's numbers.
    match authority.take_seq(session, seq) {
        Some(true) => Ok(Verdict::Data {
            session,
            early: true,
        }),
        Some(false) => Err(Failure::Auth(format!(
            "early data connection of session {session:#x}: sequence number {seq} used before \
             or too old"
        ))),
        None => Err(Failure::UnknownSession(session)),
    }
}

/// Accepts the connection: tells the client its session id and the heartbeat timing.
pub(crate) async fn send_welcome<S>(
    io: &mut S,
    session: u64,
    heartbeat: Duration,
    dead_after: Duration,
) -> Result<(), FrameIo>
where
    S: AsyncWrite + Unpin,
{
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    let welcome = Welcome::Ok {
        session,
        heartbeat_ms: ms(heartbeat),
        dead_after_ms: ms(dead_after),
    };
    write_frame(io, &welcome).await
}

/// Tells the client why it is refused; best effort, the connection closes either way.
pub(crate) async fn refuse<S: AsyncWrite + Unpin>(io: &mut S, why: HandshakeError) {
    let _ = write_frame(io, &Welcome::Err(why)).await;
}

fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
}

/// A client-supplied name made safe for a log line.
fn printable(name: &str) -> String {
    name.chars()
        .take(MAX_NAME_LEN)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests;
