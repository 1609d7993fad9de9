//! A running `burrow` process whose output lines the test can wait for.
//!
//! Readiness is always a line the process prints, never a sleep: every wait here is bounded and,
//! when it gives up, panics with everything the process printed so far. When a test panics while
//! a process is alive, the process's output is printed too, so a failure explains itself.

use super::TestDir;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How long any single wait for a line or an exit may take before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// Everything a process printed so far, line by line.
#[derive(Debug, Default, Clone)]
pub(crate) struct Output {
    /// Lines printed on stdout.
    pub(crate) stdout: Vec<String>,
    /// Lines printed on stderr (the logs).
    pub(crate) stderr: Vec<String>,
    /// Stdout reached end of file.
    stdout_done: bool,
    /// Stderr reached end of file.
    stderr_done: bool,
}

impl Output {
    /// Both pipes are closed: nothing more will come.
    fn finished(&self) -> bool {
        self.stdout_done && self.stderr_done
    }

    /// All output, for failure messages.
    pub(crate) fn dump(&self, name: &str) -> String {
        format!(
            "----- {name} stdout -----\n{}\n----- {name} stderr -----\n{}\n----- end of {name} -----",
            self.stdout.join("\n"),
            self.stderr.join("\n")
        )
    }
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy)]
enum Pipe {
    Stdout,
    Stderr,
}

/// A child `burrow` process, killed when dropped.
pub(crate) struct Proc {
    name: String,
    child: Child,
    output: watch::Receiver<Output>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `burrow ARGS` with logs at `info` (and the server's per-stream lines, which name
    /// the relay path, and its UDP flow expiry lines), a clean environment for burrow's own
    /// variables,
    /// and the XDG directories (so clients' status sockets too) inside the test's directory.
    pub(crate) fn spawn(name: &str, dir: &TestDir, args: &[String]) -> Proc {
        Proc::spawn_command(name, Proc::command(dir, args))
    }

    /// The command [`Proc::spawn`] runs, for a test that adds to its environment first.
    pub(crate) fn command(dir: &TestDir, args: &[String]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_burrow"));
        cmd.args(args)
            // BURROW_E2E_LOG turns up burrow's logs when a test needs a closer look.
            .env(
                "BURROW_LOG",
                std::env::var("BURROW_E2E_LOG").unwrap_or_else(|_| {
                    "info,burrow_server::tunnel=debug,burrow_server::udp=debug,burrow_server::pool=debug,burrow_server::registry=debug"
                        .into()
                }),
            )
            .env_remove("RUST_LOG")
            .env_remove("BURROW_TOKEN")
            .env_remove("BURROW_KNOWN_HOSTS")
            .env_remove("BURROW_STATE_DIR")
            .env_remove("BURROW_LOG_FORMAT")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            // A proxy from the test's own environment would sit between every client and server.
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
            .env("XDG_STATE_HOME", dir.join("xdg-state"))
            .env("XDG_RUNTIME_DIR", dir.join("xdg-runtime"));
        cmd
    }

    /// Starts any command with piped output, killed when dropped; panics with a clear message
    /// when the program is missing.
    pub(crate) fn spawn_command(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.as_std()));
        let (tx, output) = watch::channel(Output::default());
        let tx = Arc::new(tx);
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(collect(stdout, Pipe::Stdout, tx.clone()));
        tokio::spawn(collect(stderr, Pipe::Stderr, tx));
        Proc {
            name: name.to_string(),
            child,
            output,
            status: None,
        }
    }

    /// The process id, for signals.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("process already reaped")
    }

    /// A copy of everything printed so far.
    pub(crate) fn output(&self) -> Output {
        self.output.borrow().clone()
    }

    /// All output so far, for failure messages.
    pub(crate) fn dump(&self) -> String {
        self.output.borrow().dump(&self.name)
    }

    /// Waits until `check` returns a value for the output so far. Panics with the output when
    /// [`WAIT`] passes or the process closes its pipes first.
    pub(crate) async fn wait_for<T>(
        &self,
        what: &str,
        check: impl FnMut(&Output) -> Option<T>,
    ) -> T {
        self.wait_for_within(WAIT, what, check).await
    }

    /// Like [`Proc::wait_for`] with an explicit bound.
    pub(crate) async fn wait_for_within<T>(
        &self,
        within: Duration,
        what: &str,
        mut check: impl FnMut(&Output) -> Option<T>,
    ) -> T {
        let mut rx = self.output.clone();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            {
                let out = rx.borrow_and_update();
                if let Some(found) = check(&out) {
                    return found;
                }
                if out.finished() {
                    panic!(
                        "{} ended before {what}\n{}",
                        self.name,
                        out.dump(&self.name)
                    );
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!(
                    "{} did not print {what} within {within:?}\n{}",
                    self.name,
                    self.dump()
                );
            }
        }
    }

    /// Waits for the first stdout line matching `pred` and returns it.
    pub(crate) async fn wait_stdout(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_stdout_nth(what, 1, pred).await
    }

    /// Waits for the `n`th (1-based) stdout line matching `pred` and returns it.
    pub(crate) async fn wait_stdout_nth(
        &self,
        what: &str,
        n: usize,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_for(what, |o| {
            o.stdout.iter().filter(|l| pred(l)).nth(n - 1).cloned()
        })
        .await
    }

    /// Waits for the first stderr line matching `pred` and returns it.
    pub(crate) async fn wait_stderr(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for(what, |o| o.stderr.iter().find(|l| pred(l)).cloned())
            .await
    }

    /// Waits for the process to exit within `within`, then for its pipes to close, and returns
    /// the exit status.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "{} did not exit within {within:?}\n{}",
                self.name,
                self.dump()
            ),
        };
        self.status = Some(status);
        // A grandchild could keep the pipes open; the output so far is enough then.
        let mut rx = self.output.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(Output::finished)).await;
        status
    }

    /// Waits for the process to exit with code 1 and returns its stderr.
    pub(crate) async fn expect_exit_1(&mut self) -> Vec<String> {
        let status = self.wait_exit(WAIT).await;
        assert_eq!(
            status.code(),
            Some(1),
            "{} exit status {status}\n{}",
            self.name,
            self.dump()
        );
        self.output().stderr
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub(crate) async fn kill9(&mut self) {
        if self.status.is_none() {
            let _ = self.child.start_kill();
        }
        self.wait_exit(WAIT).await;
    }

    /// Sends a signal by name (`TERM`, `INT`, ...) with kill(1).
    pub(crate) fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // BURROW_E2E_SHOW prints every process's output, for a look at passing tests too.
        if std::thread::panicking() || std::env::var_os("BURROW_E2E_SHOW").is_some() {
            eprintln!("{}", self.dump());
        }
    }
}

/// Reads lines from one pipe into the shared output until end of file.
async fn collect(pipe: impl AsyncRead + Unpin, which: Pipe, tx: Arc<watch::Sender<Output>>) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tx.send_modify(|o| match which {
            Pipe::Stdout => o.stdout.push(line),
            Pipe::Stderr => o.stderr.push(line),
        });
    }
    tx.send_modify(|o| match which {
        Pipe::Stdout => o.stdout_done = true,
        Pipe::Stderr => o.stderr_done = true,
    });
}

/// True when some line contains every one of `words`, compared without case.
pub(crate) fn any_line_has(lines: &[String], words: &[&str]) -> bool {
    lines.iter().any(|l| {
        let l = l.to_lowercase();
        words.iter().all(|w| l.contains(&w.to_lowercase()))
    })
}
