//! A disposable memory hog (`oomtrace hog`, hidden): what `tail --demo` and the tests run inside a
//! throwaway memory cgroup to provoke a real OOM kill, and the benchmark workloads of
//! `cargo xtask bench`: page faults (`--fault-loop`) and signals and process churn
//! (`--signal-loop`).
use std::{
    fs::OpenOptions,
    io::Write,
    os::fd::AsRawFd,
    path::PathBuf,
    time::{Duration, Instant},
};

#[derive(Debug, Clone)]
pub struct HogOptions {
    /// Anonymous memory to allocate and touch, in MiB; without it, allocate until killed.
    pub anon_mb: Option<u64>,
    /// A tmpfs file to map shared and touch first (shmem RSS).
    pub shm_file: Option<PathBuf>,
    /// Size of the shared mapping, in MiB.
    pub shm_mb: Option<u64>,
    /// Set the process name (comm) first, to tell hogs apart in kernel reports.
    pub comm: Option<String>,
    /// Pause between 1 MiB steps, in milliseconds.
    pub step_ms: u64,
    /// Once the target is reached, start a second thread, then exit (exit_group) when a line
    /// arrives on stdin: lets a test hold the process inside its exit with ptrace.
    pub exit_on_stdin: bool,
    /// Sleep this long, in milliseconds, before the anonymous allocation (after the shared
    /// mapping, if any): the process sits small, then allocates everything at once.
    pub delay_ms: u64,
    /// Page-fault benchmark: ROUNDS times map --anon-mb MiB anonymous, write every page and
    /// unmap it; then print `fault-loop rounds=R mb=M elapsed_ns=N` and exit 0.
    pub fault_loop: Option<u64>,
    /// Allocate in a child forked without exec; the parent holds it as a zombie until a line
    /// arrives on stdin, then reaps it.
    pub fork: bool,
    /// Signal benchmark: send SIGUSR1, ignored, to itself this many times, then fork, exit and
    /// reap `fork_loop` children; print `signal-loop signals=N forks=M signals_ns=S forks_ns=F
    /// signal_batch=B best_signal_batch_ns=X fork_batch=C best_fork_batch_ns=Y` (the times of
    /// each part, and of its fastest hundredth) and exit 0.
    pub signal_loop: Option<u64>,
    /// Children for `signal_loop` (each exit sends its parent a SIGCHLD); default N / 100.
    pub fork_loop: Option<u64>,
}

const MIB: usize = 1 << 20;

fn touch(ptr: *mut u8, len: usize) {
    let page = 4096;
    let mut off = 0;
    while off < len {
        // SAFETY: ptr..ptr+len is a live writable mapping owned by this process.
        unsafe { ptr.add(off).write_volatile(1) };
        off += page;
    }
}

fn map(len: usize, fd: Option<i32>) -> std::io::Result<*mut u8> {
    let (flags, fd) = match fd {
        Some(fd) => (libc::MAP_SHARED, fd),
        None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
    };
    // SAFETY: a fresh mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.cast())
}

fn unmap(ptr: *mut u8, len: usize) -> std::io::Result<()> {
    // SAFETY: ptr..ptr+len is a mapping made by `map` and not used afterwards.
    if unsafe { libc::munmap(ptr.cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Maps, writes every page of and unmaps `mb` MiB, `rounds` times; returns the time taken.
fn fault_loop(rounds: u64, mb: u64) -> std::io::Result<Duration> {
    let len = mb as usize * MIB;
    let start = Instant::now();
    for _ in 0..rounds {
        let p = map(len, None)?;
        touch(p, len);
        unmap(p, len)?;
    }
    Ok(start.elapsed())
}

/// How long a run of operations took, in all and in its fastest batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timed {
    total: Duration,
    /// Operations per batch: a hundredth of the run (at least 1; 0 for an empty run).
    batch: u64,
    /// The fastest whole batch: on a shared machine, the run least disturbed by other work.
    best: Duration,
}

/// Runs `op` `n` times, timing the whole and each batch of `n / 100` (the remainder counts in
/// the total only).
fn timed_batches(n: u64, mut op: impl FnMut() -> std::io::Result<()>) -> std::io::Result<Timed> {
    let batch = (n / 100).max(1).min(n);
    let mut best = Duration::MAX;
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let size = batch.min(n - done);
        let batch_start = Instant::now();
        for _ in 0..size {
            op()?;
        }
        if size == batch {
            best = best.min(batch_start.elapsed());
        }
        done += size;
    }
    Ok(Timed {
        total: start.elapsed(),
        batch,
        best: if n == 0 { Duration::ZERO } else { best },
    })
}

/// Sends SIGUSR1 to this process `signals` times with kill(2), then forks `forks` children
/// that exit at once and reaps each; returns the time of each part.
///
/// SIGUSR1 is set to SIG_IGN first: every kill(2) still goes through signal generation (the
/// `signal_generate` tracepoint fires, result "ignored") but no handler runs, so the loop times
/// the generation path alone. `kill -0` would not do: it only checks permissions and generates
/// nothing. Each child's exit sends this process a SIGCHLD, another generation.
fn signal_loop(signals: u64, forks: u64) -> std::io::Result<(Timed, Timed)> {
    // SAFETY: installs a disposition, no handler code.
    if unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let signalled = timed_batches(signals, || {
        // SAFETY: signals this process only, and SIGUSR1 is ignored.
        if unsafe { libc::kill(me, libc::SIGUSR1) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })?;
    let forked = timed_batches(forks, fork_exit_reap)?;
    Ok((signalled, forked))
}

/// Forks a child that exits at once, and reaps it.
fn fork_exit_reap() -> std::io::Result<()> {
    // SAFETY: the child only calls _exit, which is async-signal-safe, so forking a possibly
    // multi-threaded process is fine.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: ends the child at once, without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(std::io::Error::other(format!(
            "child {pid} ended with wait status {status:#x}"
        )));
    }
    Ok(())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the hog; returns only on error (it ends by being killed, or sleeps once its target is
/// reached until its parent kills it), or after `--fault-loop` or `--signal-loop`.
pub fn run(args: &HogOptions) -> anyhow::Result<()> {
    if let Some(comm) = &args.comm {
        let name = std::ffi::CString::new(comm.as_str())?;
        // SAFETY: PR_SET_NAME reads a NUL-terminated string (truncated to 15 bytes).
        if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    if let Some(signals) = args.signal_loop {
        let forks = args.fork_loop.unwrap_or(signals / 100);
        let (sig, fork) = signal_loop(signals, forks)?;
        say(&format!(
            "signal-loop signals={signals} forks={forks} signals_ns={} forks_ns={} \
             signal_batch={} best_signal_batch_ns={} fork_batch={} best_fork_batch_ns={}",
            sig.total.as_nanos(),
            fork.total.as_nanos(),
            sig.batch,
            sig.best.as_nanos(),
            fork.batch,
            fork.best.as_nanos()
        ));
        return Ok(());
    }
    if args.fork {
        return fork_and_hold(&HogOptions {
            fork: false,
            ..args.clone()
        });
    }
    if let (Some(path), Some(mb)) = (&args.shm_file, args.shm_mb) {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let len = mb as usize * MIB;
        file.set_len(len as u64)?;
        let p = map(len, Some(file.as_raw_fd()))?;
        touch(p, len);
        say(&format!("shm {mb}"));
    }
    if args.delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(args.delay_ms));
    }
    if let (Some(rounds), Some(mb)) = (args.fault_loop, args.anon_mb) {
        let elapsed = fault_loop(rounds, mb)?;
        say(&format!(
            "fault-loop rounds={rounds} mb={mb} elapsed_ns={}",
            elapsed.as_nanos()
        ));
        return Ok(());
    }
    let mut allocated = 0u64;
    loop {
        if args.anon_mb.is_some_and(|target| allocated >= target) {
            if args.exit_on_stdin {
                // With a second thread, exit_group marks the whole group as exiting
                // (SIGNAL_GROUP_EXIT) on every kernel version.
                std::thread::spawn(|| loop {
                    std::thread::sleep(Duration::from_secs(3600));
                });
                say(&format!("ready {allocated}"));
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                std::process::exit(0);
            }
            say(&format!("ready {allocated}"));
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let p = map(MIB, None)?;
        touch(p, MIB);
        allocated += 1;
        if args.step_ms > 0 {
            std::thread::sleep(Duration::from_millis(args.step_ms));
        }
    }
}

/// Runs the hog in a child forked without exec, which keeps this process's command line and
/// environment; waits for a line on stdin before reaping it, so that the child stays a zombie
/// (its `/proc` entry without a command line) meanwhile.
fn fork_and_hold(child_args: &HogOptions) -> anyhow::Result<()> {
    // SAFETY: the hog starts no thread before this point, so the child is a copy of a
    // single-threaded process and may run ordinary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        let result = run(child_args);
        // The child never returns into the parent's code paths.
        std::process::exit(i32::from(result.is_err()));
    }
    say(&format!("child {pid}"));
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(std::io::Error::last_os_error().into());
    }
    if libc::WIFSIGNALED(status) {
        say(&format!("child signal {}", libc::WTERMSIG(status)));
    } else {
        say(&format!("child exit {}", libc::WEXITSTATUS(status)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_calls(n: u64) -> (u64, Timed) {
        let mut calls = 0;
        let timed = timed_batches(n, || {
            calls += 1;
            Ok(())
        })
        .expect("the op never fails");
        (calls, timed)
    }

    #[test]
    fn batches_are_a_hundredth_and_every_op_runs_once() {
        let (calls, t) = count_calls(250);
        assert_eq!((calls, t.batch), (250, 2));
        assert!(t.best <= t.total);
        let (calls, t) = count_calls(5);
        assert_eq!((calls, t.batch), (5, 1));
        let (calls, t) = count_calls(0);
        assert_eq!((calls, t.batch, t.best), (0, 0, Duration::ZERO));
    }

    #[test]
    fn an_error_stops_the_run() {
        let mut calls = 0;
        let result = timed_batches(10, || {
            calls += 1;
            Err(std::io::Error::other("no"))
        });
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }
}
