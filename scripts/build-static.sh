#!/usr/bin/env bash
# Build the burrow binary we ship for x86_64 Linux: a release build, statically linked with
# glibc (a static PIE), its hot code laid out first (crates/cli/build.rs). One file that runs on
# any x86_64 Linux with no shared library to match, and that holds less memory at rest than the
# dynamically linked build: no ld.so, libc and libm mapped in whole, only the parts of libc it
# calls, laid out with the rest of the code (docs/benchmarks.md, "A static binary").
#
#   scripts/build-static.sh        # prints the binary's path on stdout
#
# `--target` is what keeps `crt-static` off the build scripts and proc macros, which cargo
# builds for the host and which cannot be linked statically. Extra arguments go to cargo build.
# Elsewhere than x86_64 Linux with glibc, build with `cargo build --release` instead.
set -euo pipefail
root=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
cd "$root"
triple=x86_64-unknown-linux-gnu
host=$(rustc -vV | sed -n 's/^host: //p')
if [[ $host != "$triple" ]]; then
    echo "build-static.sh: this host is $host; the static build is for $triple (use cargo build --release)" >&2
    exit 1
fi
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    cargo build --release --locked -p burrow --target "$triple" "$@" >&2
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/$triple/release/burrow"
# A static PIE has no program interpreter (PT_INTERP); refuse to call a dynamic binary static.
python3 - "$bin" <<'PY' >&2
import struct, sys
with open(sys.argv[1], "rb") as f:
    elf = f.read(64)
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        sys.exit(f"build-static.sh: {sys.argv[1]} is not a 64-bit ELF file")
    phoff, = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    for i in range(phnum):
        f.seek(phoff + i * phentsize)
        if struct.unpack("<I", f.read(4))[0] == 3:  # PT_INTERP
            sys.exit(f"build-static.sh: {sys.argv[1]} asks for a program interpreter: not static")
PY
echo "$bin"
