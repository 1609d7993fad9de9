#!/usr/bin/env bash
# burrow with its default carrier: TLS 1.3, the server's self-signed identity pinned by
# fingerprint on the client. The encrypted peer to compare with is rathole-noise.
# Sourced rather than exec'd so the harness's log lines name this adapter.
# shellcheck disable=SC2034  # read by burrow.sh
BURROW_CARRIER=tls
. "$(dirname "${BASH_SOURCE[0]}")/burrow.sh"
