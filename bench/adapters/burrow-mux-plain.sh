#!/usr/bin/env bash
# burrow with its mux carrier over plain TCP (--insecure-plain on both sides; see burrow.sh and
# docs/carriers.md): every visitor a yamux stream of one connection, nothing encrypted, so the
# cost of a stream per visitor is seen without TLS's.
# Sourced rather than exec'd so the harness's log lines name this adapter.
# shellcheck disable=SC2034  # read by burrow.sh
BURROW_CARRIER=mux-plain
. "$(dirname "${BASH_SOURCE[0]}")/burrow.sh"
