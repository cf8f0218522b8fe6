//! A minimal stderr logger: `oomtrace: LEVEL: message`, and `oomtrace: LEVEL: ebpf: message` for
//! the eBPF programs' records (forwarded by aya-log at `-v`).
use log::{Level, LevelFilter, Log, Metadata, Record};
use oomtrace_common::failure::LOG_TARGET as EBPF_TARGET;

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if self.enabled(r.metadata()) && r.target().starts_with("oomtrace") {
            let level = match r.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            let from = if r.target() == EBPF_TARGET {
                "ebpf: "
            } else {
                ""
            };
            eprintln!("oomtrace: {level}: {from}{}", r.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger (once; later calls only change the level).
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// The level the eBPF programs log at: none (their log calls pruned at load) unless the log
/// level is debug or finer (`-v`).
pub fn ebpf_level() -> Option<aya_log::Level> {
    match log::max_level() {
        LevelFilter::Debug => Some(aya_log::Level::Debug),
        LevelFilter::Trace => Some(aya_log::Level::Trace),
        _ => None,
    }
}
