//! `GET /bans` and `DELETE /bans/{address}`: the addresses banned from the control port for
//! failing too many handshakes, and lifting one ban by hand.

use super::{error, json_response};
use crate::Shared;
use crate::bans::{Ban, Source};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tracing::info;

/// `GET /bans`: every active ban, oldest first.
pub(super) fn list(shared: &Shared) -> Value {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let active = shared.bans().active(now);
    let bans: Vec<Value> = active
        .iter()
        .map(|(source, ban)| ban_json(*source, ban, now, wall))
        .collect();
    Value::Array(bans)
}

/// The number of active bans, for the `burrow_banned_addresses` gauge.
pub(super) fn count(shared: &Shared) -> usize {
    shared.bans().active(Instant::now()).len()
}

fn ban_json(source: Source, ban: &Ban, now: Instant, wall: SystemTime) -> Value {
    // Instants have no calendar: place them relative to the wall clock read with `now`.
    let unix = |at: Instant| {
        let wall_at = if at >= now {
            wall.checked_add(at - now)
        } else {
            wall.checked_sub(now - at)
        };
        wall_at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    };
    json!({
        "address": source.to_string(),
        "since_unix": unix(ban.since),
        "until_unix": unix(ban.until),
        "remaining_secs": ban.until.saturating_duration_since(now).as_secs(),
        "failures": ban.failures,
    })
}

/// `DELETE /bans/{address}`: lifts the ban of an IPv4 address or of an IPv6 /64 (given as any
/// address in it, or as `NETWORK/64`, the slash written as is or as `%2F`).
pub(super) fn lift(shared: &Shared, address: &str) -> Response<Full<Bytes>> {
    let address = address.replace("%2F", "/").replace("%2f", "/");
    let Some(source) = Source::parse(&address) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "`{address}` is not an IP address (write e.g. 203.0.113.7, or 2001:db8::/64 for an IPv6 network)"
            ),
        );
    };
    if !shared.bans().lift(source, Instant::now()) {
        return error(StatusCode::NOT_FOUND, &format!("{source} is not banned"));
    }
    info!(%source, "ban lifted by the operator");
    json_response(StatusCode::OK, json!({"lifted": source.to_string()}))
}
