//! `[[udp_sinks]]` and `--udp-sink NAME=IP:PORT`: the server-side UDP addresses clients may send
//! events to, and their conversion into [`UdpSink`]s.
//!
//! A client names a sink; it never gives an address. So the operator's list is the whole of
//! where a client can make the server send datagrams, which is why every entry is checked here
//! and a name may appear only once (flags add to the file's list, they do not replace it).

use crate::diag::{Item, Problems};
use crate::fields;
use burrow_server::config::UdpSink;
use serde::Deserialize;
use std::collections::HashSet;

/// The flag every sink given on the command line is reported under.
const FLAG: &str = "--udp-sink";

/// One `[[udp_sinks]]` entry, as written (or as a `--udp-sink` flag gave it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUdpSink {
    /// The name clients' to-sink tunnels use.
    name: Item<String>,
    /// `IP:PORT` each event is sent to; may be a broadcast address.
    deliver_to: Item<String>,
}

impl RawUdpSink {
    /// A sink from a `--udp-sink NAME=IP:PORT` flag. clap has checked the text already; a
    /// malformed one would still be reported by [`udp_sinks`].
    pub(crate) fn from_flag(flag: &str) -> Self {
        let (name, deliver_to) = flag.split_once('=').unwrap_or((flag, ""));
        Self {
            name: Item::flag(FLAG, name.to_owned()),
            deliver_to: Item::flag(FLAG, deliver_to.to_owned()),
        }
    }
}

/// Converts the sinks, reporting bad names and addresses and names listed twice.
pub(crate) fn udp_sinks(raw: &[RawUdpSink], p: &mut Problems) -> Vec<UdpSink> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for sink in raw {
        let name = p.parse(Some(&sink.name), fields::sink_name);
        if name.is_some() && !seen.insert(sink.name.value.as_str()) {
            let message = format!("UDP sink `{}` is listed twice", sink.name.value);
            p.push(sink.name.problem(message));
        }
        let deliver_to = p.parse(Some(&sink.deliver_to), fields::sink_addr);
        if let (Some(name), Some(deliver_to)) = (name, deliver_to) {
            out.push(UdpSink { name, deliver_to });
        }
    }
    out
}
