//! One writer thread per output (stdout, the output file), each behind a bounded queue: a sink
//! that stops taking lines (a log shipper that stopped reading a pipe, a hung NFS mount) fills
//! its own queue and then drops, counted, while capture, the other sinks and the HTTP endpoint
//! go on.
use std::{
    io::{self, Write},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use log::warn;

use super::rotate::RotatingFile;

/// Lines a sink may have queued before new ones are dropped: at ~2 KB a kill record, about
/// 8 MB, minutes of a kill storm.
pub const QUEUE_LINES: usize = 4096;

/// What a writer thread does with lines.
pub trait LineWriter: Send + 'static {
    /// Writes one line (without its newline). An error is counted and logged; the line is lost.
    fn write_line(&mut self, line: &str) -> io::Result<()>;
    /// Reopens the destination (SIGHUP); a no-op by default.
    fn reopen(&mut self) {}
    /// The writer's own running total of failures, when it keeps one (the file counts failed
    /// rotations and reopens too); otherwise failed writes are counted.
    fn errors(&self) -> Option<u64> {
        None
    }
    /// Whether the sink is gone for good (stdout closed): later lines are dropped at once.
    fn closed(&self) -> bool {
        false
    }
}

/// Standard output, flushed after every line so a pipe reader sees each record at once.
pub struct Stdout {
    closed: bool,
}

impl Stdout {
    pub fn new() -> Self {
        Self { closed: false }
    }
}

impl Default for Stdout {
    fn default() -> Self {
        Self::new()
    }
}

impl LineWriter for Stdout {
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        let r = writeln!(out, "{line}").and_then(|()| out.flush());
        if let Err(e) = &r {
            if e.kind() == io::ErrorKind::BrokenPipe {
                warn!("stdout closed; records go to the other outputs only");
                self.closed = true;
            }
        }
        r
    }

    fn closed(&self) -> bool {
        self.closed
    }
}

impl LineWriter for RotatingFile {
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        RotatingFile::write_line(self, line).map_err(io::Error::other)
    }

    fn errors(&self) -> Option<u64> {
        Some(RotatingFile::errors(self))
    }

    fn reopen(&mut self) {
        match RotatingFile::reopen(self) {
            Ok(()) => log::info!("reopened {}", self.path().display()),
            Err(e) => warn!("{e}"),
        }
    }
}

/// Counters a sink shares with the metrics.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Lines dropped: the queue was full, or the sink was closed.
    pub dropped: AtomicU64,
    /// Failures of the writer (lines it failed to write; for the file, failed rotations and
    /// reopens too).
    pub errors: AtomicU64,
    /// Lines written.
    pub written: AtomicU64,
}

/// What the writer thread is sent.
enum Msg {
    Line(Arc<str>),
    /// Reopen now (the flag beside the queue carries it when the queue is full).
    Reopen,
}

/// Asks a sink's writer to reopen its destination (SIGHUP), from a task that does not own
/// the sink. Drop it before closing the sink: it holds the queue open.
pub struct ReopenHandle {
    tx: SyncSender<Msg>,
    flag: Arc<AtomicBool>,
}

impl ReopenHandle {
    pub fn reopen(&self) {
        self.flag.store(true, Ordering::Relaxed);
        // A full queue is fine: the writer checks the flag before its next line.
        let _ = self.tx.try_send(Msg::Reopen);
    }
}

/// The queue in front of one writer thread.
pub struct Sink {
    pub name: &'static str,
    tx: Option<SyncSender<Msg>>,
    reopen: Arc<AtomicBool>,
    pub counters: Arc<SinkCounters>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
    /// When a full queue was last reported (one warning per burst, not one per line).
    warned: Option<Instant>,
}

/// How often a sink that keeps dropping says so.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Sink {
    /// Starts `writer` on its own thread behind a queue of `capacity` lines.
    pub fn spawn(
        name: &'static str,
        capacity: usize,
        mut writer: impl LineWriter,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Msg>(capacity);
        let (done_tx, done) = mpsc::sync_channel(1);
        let reopen = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(SinkCounters::default());
        let thread = {
            let reopen = reopen.clone();
            let counters = counters.clone();
            std::thread::Builder::new()
                .name(format!("sink-{name}"))
                .spawn(move || {
                    for msg in rx {
                        if reopen.swap(false, Ordering::Relaxed) {
                            writer.reopen();
                        }
                        let Msg::Line(line) = msg else {
                            continue;
                        };
                        if writer.closed() {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        match writer.write_line(&line) {
                            Ok(()) => {
                                counters.written.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                let n = counters.errors.fetch_add(1, Ordering::Relaxed);
                                // The first failure, then one in a thousand (a full disk
                                // fails every line).
                                if !writer.closed() && n % 1000 == 0 {
                                    warn!("{name}: {e} ({} failures so far)", n + 1);
                                }
                            }
                        }
                        if let Some(n) = writer.errors() {
                            counters.errors.store(n, Ordering::Relaxed);
                        }
                    }
                    let _ = done_tx.send(());
                })?
        };
        Ok(Self {
            name,
            tx: Some(tx),
            reopen,
            counters,
            done,
            thread: Some(thread),
            warned: None,
        })
    }

    /// Queues a line; never waits. A full queue drops the line and counts it.
    pub fn send(&mut self, line: Arc<str>) {
        let Some(tx) = self.tx.as_ref() else {
            return;
        };
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    self.warned = Some(Instant::now());
                    warn!(
                        "output {} is not keeping up (queue of {QUEUE_LINES} lines full): \
                         dropping records for it; the other outputs and /metrics go on",
                        self.name
                    );
                }
            }
        }
    }

    /// A handle that asks the writer to reopen its destination (SIGHUP).
    pub fn reopen_handle(&self) -> Option<ReopenHandle> {
        Some(ReopenHandle {
            tx: self.tx.clone()?,
            flag: self.reopen.clone(),
        })
    }

    /// Lets the writer finish what is queued, waiting at most `within`; a writer still stuck
    /// then (a pipe nobody reads) is left behind, and the lines it had are counted as dropped.
    pub fn close(mut self, within: Duration) {
        self.tx = None;
        match self.done.recv_timeout(within) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(RecvTimeoutError::Timeout) => warn!(
                "output {} did not take its last records within {within:?}; exiting without them",
                self.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Blocks every write until released, like a pipe nobody reads.
    struct Stuck {
        gate: Arc<Mutex<()>>,
        lines: Arc<Mutex<Vec<String>>>,
    }

    impl LineWriter for Stuck {
        fn write_line(&mut self, line: &str) -> io::Result<()> {
            let _g = self.gate.lock().map_err(|_| io::Error::other("poisoned"))?;
            self.lines
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .push(line.to_string());
            Ok(())
        }
    }

    #[test]
    fn a_stuck_writer_drops_beyond_its_queue_and_never_blocks_the_sender() {
        let gate = Arc::new(Mutex::new(()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let held = gate.lock().expect("gate");
        let mut sink = Sink::spawn(
            "stuck",
            4,
            Stuck {
                gate: gate.clone(),
                lines: lines.clone(),
            },
        )
        .expect("spawn");
        // One line taken by the writer (blocked inside), four queued, the rest dropped.
        for i in 0..20 {
            sink.send(Arc::from(format!("{i}")));
            if i == 0 {
                // Let the writer take the first line off the queue and block on it.
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        let dropped = sink.counters.dropped.load(Ordering::Relaxed);
        assert_eq!(dropped, 20 - 1 - 4);
        drop(held);
        let counters = sink.counters.clone();
        sink.close(Duration::from_secs(5));
        assert_eq!(counters.written.load(Ordering::Relaxed), 5);
        let got = lines.lock().expect("lines").clone();
        assert_eq!(got, ["0", "1", "2", "3", "4"]);
    }

    #[test]
    fn close_gives_up_on_a_writer_that_never_returns() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().expect("gate");
        let mut sink = Sink::spawn(
            "stuck",
            4,
            Stuck {
                gate: gate.clone(),
                lines: Arc::new(Mutex::new(Vec::new())),
            },
        )
        .expect("spawn");
        sink.send(Arc::from("x"));
        let t = Instant::now();
        sink.close(Duration::from_millis(200));
        assert!(t.elapsed() < Duration::from_secs(2));
        drop(held);
    }
}
