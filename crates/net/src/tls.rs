//! TLS for carriers: the server's identity and the client's trust.

pub use rustls;
pub use tokio_rustls;
