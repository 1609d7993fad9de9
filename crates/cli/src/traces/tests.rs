//! Unit tests for traces: turning them on and off, the endpoint's forms, and which spans and
//! events the exporting layer sees next to the log filter.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use super::*;
use crate::testing::{env_set, lines, source};
use std::sync::{Arc, Mutex};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// True when the environment would turn traces on by itself.
fn env_traces() -> bool {
    env_set(TRACES_ENDPOINT_VAR) || env_set(ENDPOINT_VAR)
}

#[test]
fn without_an_endpoint_nothing_is_started() {
    let started = Traces::start(None, Service::Server).unwrap();
    assert!(started.is_none());
    if !env_traces() {
        let server = "token = \"t\"\nstate_dir = \"/s\"\n";
        let plan = crate::server_config::check(&source("s.toml", server)).unwrap();
        assert_eq!(plan.otlp, None);
        let client = "server = \"example.net\"\ntoken = \"t\"\ninsecure_plain = true\n\
                      [[tunnels]]\nlocal_port = 8080\n";
        let plan = crate::client_config::check(&source("c.toml", client)).unwrap();
        assert_eq!(plan.otlp, None);
    }
}

#[test]
fn the_endpoint_is_a_collector_base_url() {
    let server = |url: &str| {
        let text = format!("token = \"t\"\nstate_dir = \"/s\"\notlp_endpoint = \"{url}\"\n");
        crate::server_config::check(&source("s.toml", &text)).map(|p| p.otlp.unwrap())
    };
    for (written, url) in [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        (
            "https://otel.example.net/otlp",
            "https://otel.example.net/otlp/v1/traces",
        ),
        ("http://[::1]:4318/v1/traces", "http://[::1]:4318/v1/traces"),
        (
            "http://c:4318/?tenant=a",
            "http://c:4318/v1/traces?tenant=a",
        ),
    ] {
        assert_eq!(server(written).unwrap().url(), url, "{written}");
    }
    assert_eq!(
        lines(server("localhost:4318")),
        [
            "s.toml:3:17: `localhost:4318` is not an OTLP/HTTP URL (write e.g. http://127.0.0.1:4318)"
        ]
    );
    for bad in ["ftp://c:21", "http://", "", "http://a b"] {
        assert!(server(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_per_signal_variable_is_used_as_written() {
    let mut p = Problems::default();
    let item = |origin, url: &str| Item {
        value: url.to_owned(),
        origin: Origin::Flag(origin),
    };
    let traces = item(TRACES_ENDPOINT_VAR, "http://c:4318/custom");
    let got = endpoint(Some(&traces), &mut p).unwrap();
    assert_eq!(got.url(), "http://c:4318/custom");
    let base = item(ENDPOINT_VAR, "http://c:4318/custom");
    let got = endpoint(Some(&base), &mut p).unwrap();
    assert_eq!(got.url(), "http://c:4318/custom/v1/traces");
    let flag = item("--otlp-endpoint", "http://c:4318");
    let got = endpoint(Some(&flag), &mut p).unwrap();
    assert_eq!(got.url(), "http://c:4318/v1/traces");
}

/// What a layer was shown: span names and event messages.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber> Layer<S> for Seen {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::Id,
        _: Context<'_, S>,
    ) {
        self.0
            .lock()
            .unwrap()
            .push(format!("span {}", attrs.metadata().name()));
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let level = event.metadata().level();
        self.0.lock().unwrap().push(format!("event {level}"));
    }
}

/// The spans and events a burrow server creates around one stream.
fn emit() {
    let session = tracing::info_span!("session", session = "00000000000000aa");
    let _in_session = session.enter();
    tracing::info!("session established");
    let conn = tracing::debug_span!("conn");
    let stream = tracing::debug_span!(parent: &conn, "stream", stream = 1);
    let _in_stream = stream.enter();
    tracing::debug!("stream open");
}

#[test]
fn the_exporting_layer_has_its_own_filter() {
    let (traces, logs) = (Seen::default(), Seen::default());
    let subscriber = tracing_subscriber::registry()
        .with(logs.clone().with_filter(EnvFilter::new("info")))
        .with(traces.clone().with_filter(FilterFn::new(exported)));
    tracing::subscriber::with_default(subscriber, emit);
    // The debug stream span is exported though the logs are at `info`; `conn` is not.
    assert_eq!(
        *traces.0.lock().unwrap(),
        ["span session", "event INFO", "span stream"]
    );
    // And the logs print nothing more for it.
    assert_eq!(*logs.0.lock().unwrap(), ["span session", "event INFO"]);

    // Debug logs do not make more spans or events exported.
    let (traces, logs) = (Seen::default(), Seen::default());
    let subscriber = tracing_subscriber::registry()
        .with(logs.clone().with_filter(EnvFilter::new("debug")))
        .with(traces.clone().with_filter(FilterFn::new(exported)));
    tracing::subscriber::with_default(subscriber, emit);
    assert_eq!(
        *traces.0.lock().unwrap(),
        ["span session", "event INFO", "span stream"]
    );
    assert_eq!(logs.0.lock().unwrap().len(), 5);
}
