//! What a client tells the server about the machine it runs on, for the operator's view (the
//! admin API's `/clients`): its release, host name, operating system and architecture.

use burrow_proto::msg::{HostInfo, MAX_INFO_LEN};

/// This machine, as the server's operator sees it.
pub(crate) fn info() -> HostInfo {
    HostInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        hostname: truncated(hostname()),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
    }
}

#[cfg(unix)]
fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

#[cfg(not(unix))]
fn hostname() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_default()
}

/// `text` cut to what the server accepts, on a character boundary.
fn truncated(mut text: String) -> String {
    if text.len() > MAX_INFO_LEN {
        let mut end = MAX_INFO_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_described_within_the_servers_limits() {
        let info = info();
        assert_eq!(info.os, std::env::consts::OS);
        assert!(!info.version.is_empty());
        assert!(info.hostname.len() <= MAX_INFO_LEN);
        let long = "é".repeat(200);
        let cut = truncated(long);
        assert!(cut.len() <= MAX_INFO_LEN && cut.chars().all(|c| c == 'é'));
    }
}
