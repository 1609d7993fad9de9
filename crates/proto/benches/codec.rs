//! Codec micro-benchmarks: a control frame's round trip (encode, read the length, decode) and a
//! datagram frame's (encode, read the length, split off the flow id), the work done per message
//! on the control stream and per UDP datagram on a datagram stream; and a data connection's
//! proof, early or challenged, made and checked.
//!
//! Run with `cargo bench -p burrow-proto`; counters give messages/s and bytes/s.

// A bench target is neither library code nor a test (clippy.toml only lets tests unwrap), and its
// functions are not API: a failed encode here should panic, and needs no docs.
#![allow(clippy::unwrap_used, missing_docs)]

use burrow_proto::auth::{DataKey, Secret, SeqWindow, nonce, proofs_match};
use burrow_proto::datagram::{self, MAX_DATAGRAM};
use burrow_proto::frame::{HEADER_LEN, payload_len};
use burrow_proto::msg::{ClientMsg, StreamKind, StreamOpen, Target, TunnelKind, TunnelRequest};
use burrow_proto::{decode_payload, encode_frame};
use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use serde::{Serialize, de::DeserializeOwned};

fn main() {
    divan::main();
}

/// Encodes `msg` as a frame, reads the header back and decodes the payload, as a writer and a
/// reader of the control stream would.
fn frame_round_trip<T: Serialize + DeserializeOwned>(msg: &T) -> T {
    let frame = encode_frame(msg).unwrap();
    let (header, payload) = frame.split_first_chunk::<HEADER_LEN>().unwrap();
    let len = payload_len(*header).unwrap();
    decode_payload(&payload[..len]).unwrap()
}

/// Benchmarks one message's round trip, counting it and its frame's bytes.
fn bench_frame<T: Serialize + DeserializeOwned>(bencher: Bencher, msg: T) {
    let frame_len = encode_frame(&msg).unwrap().len();
    bencher
        .counter(ItemsCount::new(1u32))
        .counter(BytesCount::new(frame_len))
        .bench_local(|| frame_round_trip(black_box(&msg)));
}

/// The control stream's heartbeat: the smallest and most frequent message.
#[divan::bench]
fn frame_ping(bencher: Bencher) {
    bench_frame(bencher, ClientMsg::Ping { seq: 1_234_567 });
}

/// A tunnel request with a short name (a `String` to allocate on decode).
#[divan::bench]
fn frame_open_tunnel(bencher: Bencher) {
    let msg = ClientMsg::OpenTunnel(TunnelRequest {
        id: 3,
        name: "web".into(),
        kind: TunnelKind::Tcp,
        remote_port: Some(8080),
        target: "127.0.0.1:8080".into(),
    });
    bench_frame(bencher, msg);
}

/// The first frame of every stream: sent once per visitor connection.
#[divan::bench]
fn frame_stream_open(bencher: Bencher) {
    let msg = StreamOpen {
        stream: 42_000,
        kind: StreamKind::Tcp,
        target: Target::Tunnel(3),
        visitor: Some("203.0.113.7:51234".parse().unwrap()),
    };
    bench_frame(bencher, msg);
}

/// Payload sizes: a small datagram, a typical MTU-sized one (QUIC, games, WireGuard) and the
/// largest UDP payload over IPv4.
const DATAGRAM_SIZES: [usize; 3] = [64, 1400, MAX_DATAGRAM];

/// One datagram's round trip: encode into a fresh frame sized for it (as the UDP readers do),
/// read the length and split off the flow id. Bytes counted are the payload's.
#[divan::bench(args = DATAGRAM_SIZES)]
fn datagram_round_trip(bencher: Bencher, len: usize) {
    let payload = vec![0xab_u8; len];
    bencher
        .counter(ItemsCount::new(1u32))
        .counter(BytesCount::new(len))
        .bench_local(|| {
            let payload = black_box(&payload[..]);
            let mut frame = Vec::with_capacity(payload.len() + datagram::DATAGRAM_HEADER);
            datagram::encode(7, payload, &mut frame).unwrap();
            let (header, body) = frame.split_first_chunk::<4>().unwrap();
            let body_len = datagram::body_len(*header).unwrap();
            let (flow, got) = datagram::split_body(&body[..body_len]).unwrap();
            // Touch the payload so the split is not optimised away.
            (flow, got.len(), black_box(got).first().copied())
        });
}

/// A data connection's proof, made by the client and checked by the server: an early hello's
/// (over the session id and a sequence number, which the server then takes in its window) ...
#[divan::bench]
fn data_proof_early(bencher: Bencher) {
    let key = DataKey::new(&Secret::new("session-secret"));
    let mut window = SeqWindow::new();
    let mut seq = 0u64;
    bencher.counter(ItemsCount::new(1u32)).bench_local(|| {
        seq += 1;
        let proof = key.early_proof(7, black_box(seq));
        let checked = proofs_match(&key.early_proof(7, seq), &proof);
        checked && window.take(seq)
    });
}

/// ... and a challenged one's (the server's fresh nonce, the proof over it).
#[divan::bench]
fn data_proof_challenged(bencher: Bencher) {
    let key = DataKey::new(&Secret::new("session-secret"));
    bencher.counter(ItemsCount::new(1u32)).bench_local(|| {
        let challenge = nonce();
        let proof = key.proof(7, black_box(&challenge));
        proofs_match(&key.proof(7, &challenge), &proof)
    });
}
