#!/usr/bin/env bash
# Build the burrow binary to deploy on x86_64 Linux: a release build, statically linked with
# glibc (a static PIE), its hot code laid out first (crates/cli/build.rs). One file that runs on
# any x86_64 Linux with no shared library to match, and that holds less memory at rest than the
# dynamically linked build: no ld.so, and instead of libc, libm and libgcc_s mapped in 64 KiB
# windows around whatever they run, the parts of libc it calls, laid out with the rest of the
# code (docs/benchmarks.md, "A static binary").
#
#   scripts/build-static.sh        # prints the binary's path on stdout
#
# `--target` is what keeps `crt-static` off the build scripts and proc macros, which cargo
# builds for the host and which cannot be linked statically. Needs glibc 2.34 or later, the
# first whose static library carries its `files` and `dns` name sources (/etc/hosts and DNS)
# instead of loading them at run time. Elsewhere, build with `cargo build --release`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
triple=x86_64-unknown-linux-gnu
host=$(rustc -vV | sed -n 's/^host: //p')
if [[ $host != "$triple" ]]; then
    echo "build-static.sh: this host is $host; the static build is for $triple (use cargo build --release)" >&2
    exit 1
fi
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed -n 's/^glibc \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
read -r major minor <<<"${glibc:-0 0}"
if ((major < 2 || (major == 2 && minor < 34))); then
    echo "build-static.sh: glibc ${major}.${minor} here; a static build needs 2.34 or later (use cargo build --release)" >&2
    exit 1
fi
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    cargo build --release --locked -p burrow --target "$triple" >&2
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/$triple/release/burrow"
# A static PIE is position-independent (ET_DYN) and has no program interpreter (PT_INTERP);
# refuse to call anything else static.
python3 - "$bin" <<'PY' >&2
import struct, sys
with open(sys.argv[1], "rb") as f:
    elf = f.read(64)
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        sys.exit(f"build-static.sh: {sys.argv[1]} is not a 64-bit ELF file")
    if struct.unpack_from("<H", elf, 16)[0] != 3:  # ET_DYN
        sys.exit(f"build-static.sh: {sys.argv[1]} is not position-independent")
    phoff, = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    for i in range(phnum):
        f.seek(phoff + i * phentsize)
        if struct.unpack("<I", f.read(4))[0] == 3:  # PT_INTERP
            sys.exit(f"build-static.sh: {sys.argv[1]} asks for a program interpreter: not static")
PY
echo "$bin"
