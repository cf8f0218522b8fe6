//! Boots one kernel under qemu (TCG), streams its serial console, and watches it: step
//! markers, libtest results, kernel panics, soft lockups and silence. qemu is killed on any
//! of those failures and whenever this value is dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::guest::{parse_marker, Marker};
use crate::test::Tally;

/// How a VM is started and how long it may take.
pub(super) struct BootSpec<'a> {
    pub label: &'a str,
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Whole run, boot to power-off.
    pub timeout: Duration,
    /// Longest stretch without a line on the console.
    pub silence: Duration,
}

/// One guest step as the console reported it.
#[derive(Debug, Default)]
pub(super) struct StepResult {
    pub name: String,
    pub rc: Option<i32>,
    pub tally: Tally,
    pub elapsed: Duration,
}

/// What one VM run produced.
#[derive(Debug, Default)]
pub(super) struct VmRun {
    /// `uname -r` and memory, as the guest printed them.
    pub guest: String,
    /// qemu start to the init script's first line.
    pub boot: Option<Duration>,
    pub total: Duration,
    pub steps: Vec<StepResult>,
    pub done: bool,
    /// A panic, lockup, hang or timeout, if one ended the run.
    pub fatal: Option<String>,
    /// Lines of `oomtrace check` that name the probes' hooks.
    pub probe_lines: Vec<String>,
}

impl VmRun {
    pub(super) fn passed(&self) -> bool {
        self.done
            && self.fatal.is_none()
            && self
                .steps
                .iter()
                .all(|s| s.rc == Some(0) && s.tally.failed == 0)
    }
}

/// Kernel messages that mean the guest is broken.
const FATAL: &[&str] = &[
    "Kernel panic - not syncing",
    "BUG: soft lockup",
    "watchdog: BUG:",
    "BUG: kernel NULL pointer",
    "BUG: unable to handle",
    "general protection fault",
    "Oops:",
    "detected stalls on CPUs",
    "blocked for more than",
];

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Strips carriage returns and terminal escape sequences the firmware and console print.
fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte; other escapes: drop ESC and the next char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

pub(super) fn boot(spec: &BootSpec) -> Result<VmRun> {
    let append = [
        "console=ttyS0",
        "loglevel=4",
        "panic=-1",
        "oops=panic",
        "softlockup_panic=1",
        "nokaslr",
        "rdinit=/init",
    ]
    .join(" ");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
    ])
    .args(["-serial", "stdio", "-monitor", "none"])
    .args(["-m", &spec.memory_mib.to_string()])
    .args(["-smp", &spec.cpus.to_string()])
    .arg("-kernel")
    .arg(spec.vmlinuz)
    .arg("-initrd")
    .arg(spec.initramfs)
    .args(["-append", &append])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    eprintln!("==> [{}] {}", spec.label, crate::util::describe(&cmd));
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .context("failed to start qemu-system-x86_64 (Debian package qemu-system-x86)")?;
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                if tx.send(clean(&String::from_utf8_lossy(&buf))).is_err() {
                    return;
                }
                buf.clear();
            }
        });
    }
    drop(tx);
    let qemu = Qemu(child);
    let run = watch(spec, start, &rx);
    drop(qemu);
    Ok(run)
}

fn watch(spec: &BootSpec, start: Instant, rx: &mpsc::Receiver<String>) -> VmRun {
    let mut run = VmRun::default();
    let mut current: Option<(StepResult, Instant)> = None;
    let mut fatal_at: Option<Instant> = None;
    let deadline = start + spec.timeout;
    loop {
        let now = Instant::now();
        if fatal_at.is_some_and(|t| now >= t + Duration::from_secs(3)) {
            break;
        }
        if now >= deadline {
            run.fatal = Some(format!(
                "timed out after {}s (hang?)",
                spec.timeout.as_secs()
            ));
            break;
        }
        let wait = spec.silence.min(deadline - now);
        let line = match rx.recv_timeout(wait) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if fatal_at.is_none() && run.fatal.is_none() && Instant::now() < deadline {
                    run.fatal = Some(format!(
                        "no console output for {}s (hang?)",
                        spec.silence.as_secs()
                    ));
                }
                if run.fatal.is_some() {
                    break;
                }
                continue;
            }
            // qemu exited (power-off, or -no-reboot after a panic).
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        eprintln!("[{}] {line}", spec.label);
        if run.fatal.is_none() {
            if let Some(pat) = FATAL.iter().find(|p| line.contains(*p)) {
                run.fatal = Some(format!("kernel reported \"{pat}\": {}", line.trim()));
                fatal_at = Some(Instant::now());
            }
        }
        if let Some((step, _)) = current.as_mut() {
            step.tally.add_line(line.trim());
            if step.name == "check" && line.trim_start().starts_with("probe ") {
                run.probe_lines.push(line.trim().to_string());
            }
        }
        match parse_marker(&line) {
            Some(Marker::Boot(guest)) => {
                run.boot = Some(start.elapsed());
                run.guest = guest.to_string();
            }
            Some(Marker::Begin(name)) => {
                let step = StepResult {
                    name: name.to_string(),
                    ..StepResult::default()
                };
                current = Some((step, Instant::now()));
            }
            Some(Marker::End(name, rc)) => {
                if let Some((mut step, began)) = current.take() {
                    if step.name == name {
                        step.rc = Some(rc);
                        step.elapsed = began.elapsed();
                        run.steps.push(step);
                    }
                }
            }
            Some(Marker::Done) => run.done = true,
            None => {}
        }
    }
    if let Some((mut step, began)) = current.take() {
        step.elapsed = began.elapsed();
        run.steps.push(step);
    }
    if !run.done && run.fatal.is_none() {
        run.fatal = Some("the guest stopped before its last step".into());
    }
    run.total = start.elapsed();
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(silence: Duration) -> BootSpec<'static> {
        BootSpec {
            label: "test",
            vmlinuz: Path::new("/nonexistent"),
            initramfs: Path::new("/nonexistent"),
            memory_mib: 0,
            cpus: 0,
            timeout: Duration::from_secs(60),
            silence,
        }
    }

    /// Feeds `lines` as the console and closes it (qemu exited) unless `keep_open`.
    fn watch_lines(lines: &[&str], silence: Duration, keep_open: bool) -> VmRun {
        let (tx, rx) = mpsc::channel();
        for l in lines {
            tx.send(l.to_string()).expect("send");
        }
        let _open = keep_open.then_some(tx.clone());
        drop(tx);
        watch(&spec(silence), Instant::now(), &rx)
    }

    #[test]
    fn a_clean_run_passes_with_its_counts() {
        let run = watch_lines(
            &[
                "@@oomtrace-vm boot 6.1.0-56-cloud-amd64 MemTotal: 481052 kB",
                "@@oomtrace-vm begin shapes",
                "test result: ok. 8 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out",
                "@@oomtrace-vm end shapes rc=0",
                "@@oomtrace-vm done",
            ],
            Duration::from_secs(5),
            false,
        );
        assert!(run.passed(), "{run:?}");
        assert_eq!(run.steps.len(), 1);
        assert_eq!(run.steps[0].tally.passed, 8);
        assert!(run.guest.starts_with("6.1.0-56"));
    }

    #[test]
    fn a_panic_a_failed_step_or_a_missing_end_fails() {
        let panic = watch_lines(
            &[
                "@@oomtrace-vm begin shapes",
                "[   12.5] Kernel panic - not syncing: Fatal exception",
            ],
            Duration::from_secs(5),
            false,
        );
        assert!(!panic.passed());
        assert!(panic
            .fatal
            .as_deref()
            .is_some_and(|f| f.contains("Kernel panic")));

        let failed = watch_lines(
            &[
                "@@oomtrace-vm begin cli",
                "@@oomtrace-vm end cli rc=101",
                "@@oomtrace-vm done",
            ],
            Duration::from_secs(5),
            false,
        );
        assert!(!failed.passed());
        assert_eq!(failed.steps[0].rc, Some(101));

        let cut = watch_lines(&["@@oomtrace-vm begin cli"], Duration::from_secs(5), false);
        assert!(!cut.passed());
        assert_eq!(cut.steps[0].rc, None);
    }

    #[test]
    fn silence_is_a_hang() {
        let run = watch_lines(
            &["@@oomtrace-vm begin shapes"],
            Duration::from_millis(50),
            true,
        );
        assert!(
            run.fatal
                .as_deref()
                .is_some_and(|f| f.contains("no console output")),
            "{run:?}"
        );
    }

    #[test]
    fn console_noise_is_cleaned() {
        assert_eq!(clean("\x1bc\x1b[?7l\x1b[2JLinux 6.1\r\n"), "Linux 6.1");
        assert_eq!(clean("test result: ok.\r\n"), "test result: ok.");
    }
}
