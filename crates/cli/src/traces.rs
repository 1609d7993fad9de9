//! OpenTelemetry traces: burrow's `session` and `stream` spans, exported over OTLP/HTTP
//! (protobuf) to a collector.
//!
//! Traces are off unless an endpoint is configured (`--otlp-endpoint`, `otlp_endpoint`, or the
//! standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`); when off,
//! nothing here runs: no layer, no exporter thread. When on, closed spans go into the SDK's
//! bounded batch queue (spans are dropped, never waited for, when it is full) and a background
//! thread posts them; [`Traces::shutdown`] sends what is left, within [`FLUSH_DEADLINE`].
//!
//! The exporting layer has its own filter ([`exported`]): the `session` and `stream` spans at
//! any level, and burrow's events at `info` and above as span events. So traces do not depend
//! on the log filter, and turning traces on prints no more log lines.

use crate::diag::{Item, Origin, Problems};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, Filtered};
use tracing_subscriber::registry::LookupSpan;

/// How long shutdown waits for the last spans to reach the collector.
pub(crate) const FLUSH_DEADLINE: Duration = Duration::from_secs(5);
/// The per-signal variable: a full URL, used as written.
const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The shared variable: a base URL that `/v1/traces` is appended to.
const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The path of OTLP/HTTP traces under a collector's base URL.
const TRACES_PATH: &str = "/v1/traces";
/// The spans that are exported; every other span only structures the logs.
pub(crate) const EXPORTED_SPANS: [&str; 2] = ["session", "stream"];

/// A checked OTLP/HTTP traces URL, such as `http://127.0.0.1:4318/v1/traces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint(String);

impl Endpoint {
    /// The URL spans are posted to.
    pub(crate) fn url(&self) -> &str {
        &self.0
    }
}

/// Which program is exporting: the resource's `service.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// `burrow server`.
    Server,
    /// `burrow client`, `tcp`, `udp` and `http`.
    Client,
}

impl Service {
    /// The `service.name` collectors group spans by.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Service::Server => "burrow-server",
            Service::Client => "burrow-client",
        }
    }
}

/// The standard variables, when neither a flag nor the file names an endpoint: the per-signal
/// one first.
pub(crate) fn env_endpoint() -> Option<Item<String>> {
    crate::fields::env_item(TRACES_ENDPOINT_VAR).or_else(|| crate::fields::env_item(ENDPOINT_VAR))
}

/// Converts the configured endpoint: a collector's base URL gets `/v1/traces` appended (as
/// with `OTEL_EXPORTER_OTLP_ENDPOINT`), a URL already ending in it is kept, and
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as written.
pub(crate) fn endpoint(item: Option<&Item<String>>, p: &mut Problems) -> Option<Endpoint> {
    let item = item?;
    let as_written = item.origin == Origin::Flag(TRACES_ENDPOINT_VAR);
    p.parse(Some(item), |s: &str| {
        let url = checked_url(s)?;
        Ok(Endpoint(if as_written { url } else { traces_url(url) }))
    })
}

/// An `http://` or `https://` URL with a host.
pub(crate) fn checked_url(s: &str) -> Result<String, String> {
    let bad = || format!("`{s}` is not an OTLP/HTTP URL (write e.g. http://127.0.0.1:4318)");
    let uri: http::Uri = s.trim().parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(s.trim().to_owned())
}

/// A base URL's traces URL.
fn traces_url(base: String) -> String {
    let (path, query) = match base.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (base.as_str(), None),
    };
    let path = path.trim_end_matches('/');
    let path = if path.ends_with(TRACES_PATH) {
        path.to_owned()
    } else {
        format!("{path}{TRACES_PATH}")
    };
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

/// True for what the exporting layer records: burrow's `session` and `stream` spans, and
/// burrow's events at `info` and above (as events of the span they happen in).
pub(crate) fn exported(meta: &Metadata<'_>) -> bool {
    if !meta.target().starts_with("burrow") {
        return false;
    }
    if meta.is_span() {
        EXPORTED_SPANS.contains(&meta.name())
    } else {
        *meta.level() <= Level::INFO
    }
}

/// The exporting layer's filter type.
type ExportFilter = FilterFn<fn(&Metadata<'_>) -> bool>;

/// A running exporter; [`Traces::shutdown`] flushes it.
#[derive(Debug)]
pub(crate) struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Starts the batch exporter toward `endpoint`, or does nothing without one.
    pub(crate) fn start(
        endpoint: Option<&Endpoint>,
        service: Service,
    ) -> anyhow::Result<Option<Self>> {
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.url())
            .build()
            .map_err(|e| anyhow::anyhow!("cannot export traces to {}: {e}", endpoint.url()))?;
        let resource = Resource::builder()
            .with_service_name(service.name())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Some(Self { provider }))
    }

    /// The layer that turns the [`exported`] spans into OpenTelemetry spans.
    pub(crate) fn layer<S>(
        &self,
    ) -> Filtered<
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>,
        ExportFilter,
        S,
    >
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let tracer = self.provider.tracer("burrow");
        let filter: ExportFilter = FilterFn::new(exported as fn(&Metadata<'_>) -> bool);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Timing every poll of a stream's task would cost on the data path.
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_filter(filter.with_max_level_hint(Level::DEBUG))
    }

    /// Sends the spans still queued, waiting at most [`FLUSH_DEADLINE`].
    pub(crate) fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_DEADLINE) {
            tracing::warn!("traces not all sent at shutdown: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
