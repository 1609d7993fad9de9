#!/usr/bin/env bash
# burrow with its quic carrier (see burrow.sh and docs/carriers.md), the server's identity pinned
# by fingerprint on the client.
# Sourced rather than exec'd so the harness's log lines name this adapter.
# shellcheck disable=SC2034  # read by burrow.sh
BURROW_CARRIER=quic
. "$(dirname "${BASH_SOURCE[0]}")/burrow.sh"
