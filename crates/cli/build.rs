//! Links the binary with the code that runs at start, at rest and per visitor laid out
//! first (`link/code-order.txt`, written by `scripts/code-order.py`). The kernel maps code in
//! around every page a process touches, so keeping that code together is what keeps an idle
//! process's resident memory small. Only on x86_64 Linux, where rustc (1.90 and later) links
//! with its own lld; `BURROW_CODE_ORDER=0` turns it off (for another linker that lacks
//! `--symbol-ordering-file`). The names are those of a release build: a debug build links with
//! the same flags (so every build checks that the linker takes them) and matches none of them.
//!
//! A statically linked build (`scripts/build-static.sh`) also packs its relocations (`DT_RELR`)
//! when the glibc it links is 2.36 or later: the binary relocates itself at start with that
//! glibc's code, so it reads a few KiB of relocations there instead of half a MiB, whatever the
//! glibc of the machine it runs on.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link/code-order.txt");
    println!("cargo:rerun-if-env-changed=BURROW_CODE_ORDER");
    let target = env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || !rustc_links_with_lld() {
        return;
    }
    if static_crt() && glibc_at_least((2, 36)) {
        println!("cargo:rustc-link-arg-bin=burrow=-Wl,-z,pack-relative-relocs");
    }
    let wanted = env::var("BURROW_CODE_ORDER").map_or(true, |v| v != "0");
    let (true, Ok(dir)) = (wanted, env::var("CARGO_MANIFEST_DIR")) else {
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
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    version_of(Command::new(rustc).arg("-V"), 1).is_some_and(|v| v >= (1, 90))
}

/// Whether this build links the C runtime statically (`-C target-feature=+crt-static`).
fn static_crt() -> bool {
    env::var("CARGO_CFG_TARGET_FEATURE").is_ok_and(|f| f.split(',').any(|f| f == "crt-static"))
}

/// Whether the glibc this build links is at least `wanted` (the host's: the target is the
/// host's triple here).
fn glibc_at_least(wanted: (u32, u32)) -> bool {
    // "glibc 2.36"
    version_of(Command::new("getconf").arg("GNU_LIBC_VERSION"), 1).is_some_and(|v| v >= wanted)
}

/// The major and minor version in the `word`th word of what `command` prints.
fn version_of(command: &mut Command, word: usize) -> Option<(u32, u32)> {
    let out = command.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().nth(word)?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}
