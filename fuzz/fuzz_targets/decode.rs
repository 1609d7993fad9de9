//! Feeds arbitrary bytes to every decoder a peer can reach before and after authentication:
//! the preface, the frame header, and each message type. None may panic or allocate beyond the
//! frame limit; every input must end in a value or an error.
#![no_main]

use burrow_proto::frame::{HEADER_LEN, payload_len};
use burrow_proto::msg::{ClientMsg, Hello, ServerMsg, StreamOpen, Welcome};
use burrow_proto::{PREFACE_LEN, Preface, decode_payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(preface) = data.first_chunk::<PREFACE_LEN>() {
        let _ = Preface::decode(preface);
    }
    if let Some(header) = data.first_chunk::<HEADER_LEN>() {
        if let Ok(len) = payload_len(*header) {
            assert!(len <= burrow_proto::MAX_FRAME_LEN);
        }
    }
    let _ = decode_payload::<Hello>(data);
    let _ = decode_payload::<Welcome>(data);
    let _ = decode_payload::<ClientMsg>(data);
    let _ = decode_payload::<ServerMsg>(data);
    let _ = decode_payload::<StreamOpen>(data);
});
