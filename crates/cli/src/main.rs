//! The `burrow` command: a reverse tunnel's server and client in one binary.
//!
//! This file only parses the command line, sets up logging, the runtime and signals, and turns
//! the outcome into an exit code: 0 after a clean shutdown, 1 with one `burrow: error: ...` line
//! per problem on stderr, 2 (from clap) for a bad command line. Configs are converted in
//! `server_config` / `client_config`, checked in `check`, and started in `start`.

mod check;
mod client_config;
mod diag;
mod fields;
mod reload;
mod server_config;
mod signals;
mod start;
mod status;
mod status_socket;
mod systemd;
#[cfg(test)]
mod testing;
mod traces;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use client_config::{ClientArgs, HttpArgs, TcpArgs, UdpArgs};
use server_config::ServerArgs;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::LazyLock;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use traces::{Service, Traces};
use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt};

/// `--version`: the release and the wire protocol it speaks.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (protocol {})",
        env!("CARGO_PKG_VERSION"),
        burrow_proto::VERSION
    )
});

/// How long spawned work may take to stop once the command is done.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(2);

/// burrow: publish services behind NAT through a public server, over TLS.
#[derive(Debug, Parser)]
#[command(name = "burrow", version = VERSION.as_str(), about)]
struct Cli {
    /// Log format on stderr (filter with BURROW_LOG or RUST_LOG, default `info`).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "BURROW_LOG_FORMAT",
        default_value_t
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
enum LogFormat {
    /// Text for people.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What to run.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server: accept clients and publish their tunnels.
    Server(Box<ServerArgs>),
    /// Publish one local TCP port through a server.
    Tcp(TcpArgs),
    /// Publish one local UDP port (or send events to a UDP address) through a server.
    Udp(UdpArgs),
    /// Publish one local HTTP service on the server's HTTP edge, by name.
    Http(HttpArgs),
    /// Run the tunnels of a client config file.
    Client(ClientArgs),
    /// Show the state of the clients running on this machine (read from their status sockets).
    Status(status::StatusArgs),
    /// Check a server or client config file and report every problem.
    Check {
        /// The config file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command, cli.log_format) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

/// Runs one command to its end. Logging starts once the config is loaded, since it says
/// whether traces are exported too.
fn run(command: Command, format: LogFormat) -> anyhow::Result<()> {
    match command {
        Command::Check { file } => {
            init_tracing(format, None);
            check::run(&file)
        }
        Command::Status(args) => {
            init_tracing(format, None);
            status::run(&args)
        }
        Command::Server(args) => {
            let mut plan = server_config::load(&args)?;
            // Taken before the runtime starts threads: it edits the environment.
            let passed = systemd::Passed::from_env()?;
            let otlp = plan.otlp.take();
            let traces = Traces::start(otlp.as_ref(), Service::Server)?;
            traced(format, traces, |shutdown, hangups| {
                start::server(*args, plan, passed, shutdown, hangups)
            })
        }
        Command::Tcp(args) => client(format, client_config::from_tcp(&args)?, None),
        Command::Udp(args) => client(format, client_config::from_udp(&args)?, None),
        Command::Http(args) => client(format, client_config::from_http(&args)?, None),
        Command::Client(args) => {
            let plan = client_config::load(&args)?;
            client(format, plan, Some(args))
        }
    }
}

/// Runs a client plan; with the `args` of `burrow client`, it reloads its file on SIGHUP and
/// when the file changes (the one-liners have no file, and ignore SIGHUP).
fn client(
    format: LogFormat,
    mut plan: client_config::ClientPlan,
    args: Option<ClientArgs>,
) -> anyhow::Result<()> {
    let otlp = plan.otlp.take();
    let traces = Traces::start(otlp.as_ref(), Service::Client)?;
    traced(format, traces, |shutdown, hangups| {
        start::client(plan, shutdown, args.map(|args| (args, hangups)))
    })
}

/// Starts logging (and exporting `traces`, if any), runs `task`, then sends the last spans.
fn traced<F, Fut>(format: LogFormat, traces: Option<Traces>, task: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken, signals::Hangups) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    init_tracing(format, traces.as_ref());
    let result = with_runtime(task);
    if let Some(traces) = traces {
        traces.shutdown();
    }
    result
}

/// Prints an error as `burrow: error: <reason>`, one line per config problem.
fn report(err: &anyhow::Error) {
    match err.downcast_ref::<diag::ConfigError>() {
        Some(config) => config
            .lines()
            .iter()
            .for_each(|l| eprintln!("burrow: error: {l}")),
        None => eprintln!("burrow: error: {}", format!("{err:#}").replace('\n', " ")),
    }
}

/// Logs go to stderr, filtered by `BURROW_LOG`, else `RUST_LOG`, else `info`. With `traces`,
/// a second layer with its own filter exports spans, so neither filter changes the other's
/// output; without, the subscriber is the log layer alone.
fn init_tracing(format: LogFormat, traces: Option<&Traces>) {
    let filter = log_filter();
    let registry = tracing_subscriber::registry();
    // Only fails when a subscriber is already set, which nothing else here does.
    let _ = match traces {
        None => registry.with(filter).with(log_layer(format)).try_init(),
        Some(traces) => registry
            .with(log_layer(format).with_filter(filter))
            .with(traces.layer())
            .try_init(),
    };
}

/// The log filter: `BURROW_LOG`, else `RUST_LOG`, else `info`.
fn log_filter() -> EnvFilter {
    let directives = ["BURROW_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "info".to_owned());
    EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("burrow: warning: ignoring log filter `{directives}`: {e}");
        EnvFilter::new("info")
    })
}

/// Log lines on stderr, in `format`.
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    }
}

/// Runs `task` on a multi-thread runtime; SIGINT and SIGTERM cancel the token it is given, and
/// SIGHUP is handed to it (commands that do not reload drop it, and so ignore SIGHUP). Under
/// systemd, its watchdog is fed.
///
/// The task runs as a spawned task, on the runtime's worker threads, not on the thread that
/// blocks on it: a server's accept loop there would hand every connection it accepts to a worker
/// through the shared queue and wake that worker (a futex call and a thread switch per
/// connection), where a task spawned on a worker usually runs on that worker next.
fn with_runtime<F, Fut>(task: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken, signals::Hangups) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let shutdown = CancellationToken::new();
    let result = runtime.block_on(async {
        // Handlers are installed before the task starts, so a signal that arrives right after
        // the readiness line is already a clean shutdown.
        let (signals, hangups) =
            signals::Signals::install().context("cannot install signal handlers")?;
        tokio::spawn(signals.cancel_on_signal(shutdown.clone()));
        systemd::spawn_watchdog();
        match tokio::spawn(task(shutdown, hangups)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(anyhow::anyhow!("the main task was cancelled: {e}")),
        }
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_documented_command_lines_parse() {
        let ok = |line: &str| Cli::try_parse_from(line.split_whitespace()).unwrap();
        ok(
            "burrow server --config s.toml --listen 127.0.0.1:0 --ports 20000-20010,30000 \
            --token t --state-dir /s --tls-cert c --tls-key k --public-bind 0.0.0.0 \
            --lease-grace 30s --heartbeat-interval 2s --dead-after 7s \
            --udp-sink events=127.0.0.1:9999 --udp-sink lan=10.0.0.255:9999 \
            --otlp-endpoint http://127.0.0.1:4318",
        );
        ok(
            "burrow tcp 8080 --to example.net --local-host ::1 --remote-port 9000 --name alice \
            --token-file f --server-fingerprint sha256:abababababababababababababababababababababababababababababababab \
            --known-hosts k --exit-on-disconnect --pool-size 4",
        );
        ok("burrow tcp 8080 --to example.net --proxy-protocol v1");
        ok("burrow tcp 8080 --to example.net --proxy-protocol v2");
        ok(
            "burrow udp 53 --to example.net --local-host 192.168.1.255 --remote-port 5353 \
            --name alice --token t --ca ca.pem --known-hosts k --exit-on-disconnect --pool-size 2 \
            --idle-timeout 2m --max-flows 100 --one-way",
        );
        ok("burrow udp 53 --to example.net --insecure-plain");
        ok("burrow udp 9999 --to example.net --to-sink events --local-host 0.0.0.0 --name a");
        ok("burrow client --config c.toml --exit-on-disconnect");
        ok("burrow client --config c.toml --status-socket /run/c.sock");
        ok("burrow tcp 8080 --to example.net --no-status-socket");
        ok("burrow http 3000 --to example.net --status-socket s.sock");
        ok("burrow status");
        ok("burrow status --socket /run/burrow/web.sock --json");
        ok("burrow client --config c.toml --otlp-endpoint https://otel.example.net");
        ok("burrow http 3000 --to example.net --otlp-endpoint http://[::1]:4318/v1/traces");
        ok("burrow --log-format json check c.toml");
        ok("burrow tcp 8080 --to example.net --proxy http://u:p@proxy.corp:3128");
        ok("burrow udp 53 --to example.net --proxy socks5h://proxy:1080");
        ok("burrow http 3000 --to example.net --no-proxy");
        ok("burrow client --config c.toml --proxy socks5://10.0.0.1:1080");
    }

    #[test]
    fn malformed_flags_are_command_line_errors() {
        for line in [
            "burrow server --ports 9-1",
            "burrow server --dead-after soon",
            "burrow server --token a --token-file f",
            "burrow server --tls-cert c",
            "burrow server --insecure-plain --tls-cert c --tls-key k",
            "burrow tcp 0 --to h",
            "burrow tcp 80",
            "burrow tcp 80 --to h:0",
            "burrow tcp 80 --to h --ca c --server-fingerprint sha256:00",
            "burrow tcp 80 --to h --name 'a b'",
            "burrow udp 0 --to h",
            "burrow udp 53",
            "burrow udp 53 --to h --idle-timeout 500ms",
            "burrow udp 53 --to h --idle-timeout 0s",
            "burrow udp 53 --to h --max-flows 0",
            "burrow udp 53 --to h --max-flows 2000000",
            "burrow udp 53 --to h --one-way=yes",
            "burrow tcp 80 --to h --one-way",
            "burrow tcp 80 --to h --max-flows 5",
            "burrow tcp 80 --to h --to-sink e",
            "burrow tcp 80 --to h --proxy-protocol v3",
            "burrow tcp 80 --to h --proxy-protocol",
            "burrow udp 53 --to h --proxy-protocol v1",
            "burrow udp 53 --to h --to-sink e --remote-port 5",
            "burrow udp 53 --to h --to-sink e --one-way",
            "burrow udp 53 --to h --to-sink e --idle-timeout 5s",
            "burrow udp 53 --to h --to-sink e --max-flows 5",
            "burrow udp 53 --to h --to-sink a/b",
            "burrow server --udp-sink events",
            "burrow server --udp-sink e=example.net:1",
            "burrow server --udp-sink e=127.0.0.1:0",
            "burrow client",
            "burrow tcp 80 --to h --status-socket s --no-status-socket",
            "burrow status --json=yes",
            "burrow server --otlp-endpoint localhost:4318",
            "burrow tcp 80 --to h --otlp-endpoint ftp://c",
            "burrow tcp 80 --to h --proxy http://p:1 --no-proxy",
            "burrow client --config c.toml --no-proxy=yes",
        ] {
            let err = Cli::try_parse_from(line.split_whitespace()).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{line}");
        }
    }

    #[test]
    fn version_names_the_protocol() {
        assert_eq!(
            *VERSION,
            format!(
                "{} (protocol {})",
                env!("CARGO_PKG_VERSION"),
                burrow_proto::VERSION
            )
        );
    }
}
