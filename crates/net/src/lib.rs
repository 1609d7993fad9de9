//! Carriers and byte moving: TCP and TLS connections as one [`Carrier`] type, multiplexed links
//! ([`mux`]), QUIC ([`quic`]) and the WebSocket transport ([`ws`]), frame I/O over them, socket
//! tuning, and the relay that joins a visitor to a stream.
//!
//! Nothing here knows about sessions or tunnels; the server and client crates compose these.

pub mod carrier;
pub mod datagram_io;
pub mod frame_io;
pub mod mux;
pub mod quic;
pub mod relay;
pub mod tls;
pub mod udp_batch;
pub mod ws;

pub use carrier::{Carrier, Duplex, listen, tune_carrier, tune_endpoint, tune_listener};
pub use frame_io::{
    FrameIo, MAX_AFTER_PREFACE, forward_frames, read_frame, read_preface, read_preface_with,
    write_frame, write_preface, write_preface_with,
};
pub use relay::{relay, relay_reusable};
