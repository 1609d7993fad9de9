//! burrow client library.
pub mod config;
