//! Links the binary with the code that runs at start, at rest and per visitor laid out
//! first (`link/code-order.txt`, written by `scripts/code-order.py`). The kernel maps code in
//! around every page a process touches, so keeping that code together is what keeps an idle
//! process's resident memory small. Only on x86_64 Linux, where rustc (1.90 and later) links
//! with its own lld; `BURROW_CODE_ORDER=0` turns it off (for another linker that lacks
//! `--symbol-ordering-file`). The names are those of a release build: a debug build links with
//! the same flags (so every build checks that the linker takes them) and matches none of them.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link/code-order.txt");
    println!("cargo:rerun-if-env-changed=BURROW_CODE_ORDER");
    let wanted = env::var("BURROW_CODE_ORDER").map_or(true, |v| v != "0");
    let target = env::var("TARGET").unwrap_or_default();
    if !wanted || target != "x86_64-unknown-linux-gnu" || !rustc_links_with_lld() {
        return;
    }
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    println!(
        "cargo:rustc-link-arg-bin=burrow=-Wl,--symbol-ordering-file={dir}/link/code-order.txt"
    );
    // Names from another build (another toolchain, other dependency versions) are skipped.
    println!("cargo:rustc-link-arg-bin=burrow=-Wl,--no-warn-symbol-ordering");
}

/// Whether rustc is 1.90 or later, the first to link x86_64 Linux binaries with lld.
fn rustc_links_with_lld() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-V").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let mut parts = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
