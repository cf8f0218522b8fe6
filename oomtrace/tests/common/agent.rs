//! `oomtrace agent` as a child process: started on a free loopback port, ready once `/readyz`
//! answers 200, queried over plain HTTP, SIGTERM'd, killed on drop.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(30);

/// A running agent; killed on drop if still running.
pub(crate) struct AgentProcess {
    pub(crate) child: Child,
    pub(crate) port: u16,
    /// Where its stderr goes, when a file: quoted if it fails to start.
    log: Option<std::path::PathBuf>,
    /// Its stderr when piped, read as it comes (a full pipe would stall its logging).
    stderr: Arc<Mutex<String>>,
}

impl AgentProcess {
    /// `oomtrace agent --listen 127.0.0.1:PORT ARGS…` (the build's own binary: the agent runs
    /// as root, and a copy per agent would fill a VM guest's RAM-backed root), with `stdout`;
    /// stderr goes to `log` (a file) or a pipe. Waits until ready.
    pub(crate) fn start(
        args: &[&str],
        stdout: Stdio,
        log: Option<&std::path::Path>,
    ) -> AgentProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_oomtrace"));
        cmd.arg("agent")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .stdout(stdout)
            .stderr(match log {
                Some(f) => Stdio::from(std::fs::File::create(f).expect("agent log")),
                None => Stdio::piped(),
            });
        let mut child = cmd.spawn().expect("agent starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let text = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut t) = text.lock() {
                        t.push_str(&line);
                        t.push('\n');
                    }
                }
            });
        }
        let mut agent = AgentProcess {
            child,
            port,
            log: log.map(std::path::Path::to_path_buf),
            stderr,
        };
        let deadline = Instant::now() + WAIT;
        while agent.get("/readyz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "agent not ready within {WAIT:?}: {}",
                agent.log_text()
            );
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("agent exited early ({status}): {}", agent.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// Its stderr so far.
    pub(crate) fn log_text(&self) -> String {
        match &self.log {
            Some(f) => std::fs::read_to_string(f).unwrap_or_default(),
            None => self.stderr.lock().map(|t| t.clone()).unwrap_or_default(),
        }
    }

    /// (status, body, time taken) of a GET; status 0 when nothing answers within 5 s.
    pub(crate) fn get_timed(&self, path: &str) -> (u16, String, Duration) {
        let begin = Instant::now();
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new(), begin.elapsed());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .is_err()
        {
            return (0, String::new(), begin.elapsed());
        }
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body, begin.elapsed())
    }

    /// (status, body) of a GET; status 0 when nothing answers.
    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        let (status, body, _) = self.get_timed(path);
        (status, body)
    }

    /// Sends SIGTERM and returns the exit status.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        oomtrace::testing::sandbox::wait_or_kill(&mut self.child, WAIT).expect("wait")
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample line `series VALUE` of a metrics text, `None` when absent.
pub(crate) fn metric(metrics: &str, series: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A per-test pin directory on bpffs; uninstalled on drop if the test did not.
pub(crate) struct PinDir(pub(crate) std::path::PathBuf);

impl PinDir {
    pub(crate) fn new(tag: &str) -> Self {
        Self(std::path::PathBuf::from(format!(
            "/sys/fs/bpf/oomtrace-test-{tag}-{}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = Command::new(env!("CARGO_BIN_EXE_oomtrace"))
                .arg("uninstall")
                .arg("--pin-dir")
                .arg(&self.0)
                .output();
        }
    }
}
