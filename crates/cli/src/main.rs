//! The `burrow` command.
fn main() {}
