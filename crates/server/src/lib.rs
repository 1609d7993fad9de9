//! burrow server library.
pub mod config;
