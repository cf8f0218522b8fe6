//! The prefixes tools put before each kernel message, taken apart: the message, and the time as
//! printed (with the monotonic clock when the prefix has it).
//!
//! | source | line |
//! |---|---|
//! | `/dev/kmsg` | `6,1234,7033469562,-;msg` (µs; `\xNN` escapes; ` KEY=value` dictionary lines) |
//! | `dmesg` | `[ 7033.469562] msg` (also `-r`'s `<6>` and `-x`'s `kern  :info  : ` before it) |
//! | `dmesg -T` | `[Thu Nov 26 09:00:00 2026] msg` |
//! | `dmesg --time-format iso` | `2026-11-26T09:00:00,123456+00:00 msg` |
//! | `journalctl -k`, syslog | `Nov 26 09:00:00 host kernel: msg`, `-o short-precise` with `.123456` |
//! | `journalctl -k -o short-iso` | `2026-11-26T09:00:00+0000 host kernel: msg` |
//! | `journalctl -k -o short-monotonic` | `[ 7033.469562] host kernel: msg` |
//! | plain messages | `msg` |
//!
//! A syslog line whose message starts with dmesg's `[ 7033.469562] ` (rsyslog's `kern.log`)
//! gets the monotonic time from it. A line without a prefix that starts with whitespace right
//! after a prefixed one is a continuation of a multi-line message (how `dmesg` and
//! `journalctl` print those): it gets that line's time.
use std::sync::LazyLock;

use regex::Regex;

use super::kmsg;

/// One message line of a kernel log, its prefix taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The time as the prefix printed it: `7033.469562` (dmesg, short-monotonic, kmsg's µs
    /// printed that way), `Thu Nov 26 09:00:00 2026` (dmesg -T), `Nov 26 09:00:00` (journal).
    pub time: Option<String>,
    /// `CLOCK_MONOTONIC` in µs, when the prefix has it (kmsg, dmesg, short-monotonic).
    pub monotonic_us: Option<u64>,
    /// The message, leading whitespace removed.
    pub message: String,
}

fn regex(pattern: &str) -> Regex {
    // The patterns are constants, each exercised by the tests below.
    Regex::new(pattern).expect("valid pattern")
}

/// dmesg's own prefix options: `-r` (`<6>`) and `-x` (`kern  :info  : `).
const DMESG_OPTIONS: &str = r"^(?:<\d+>)?(?:[a-z]+ *:[a-z]+ *: )?";

static DMESG_MONOTONIC: LazyLock<Regex> =
    LazyLock::new(|| regex(&format!(r"{DMESG_OPTIONS}\[ *(\d+)\.(\d+)\] ?")));
static DMESG_CTIME: LazyLock<Regex> = LazyLock::new(|| {
    regex(&format!(
        r"{DMESG_OPTIONS}\[([A-Z][a-z]{{2}} [A-Z][a-z]{{2}} [ \d]\d \d\d:\d\d:\d\d \d{{4}})\] ?"
    ))
});
static DMESG_ISO: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[,.]\d+[+-]\d\d:?\d\d) "));
static JOURNAL_MONOTONIC: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^\[ *(\d+)\.(\d+)\] \S+ kernel: "));
static JOURNAL_SHORT: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?) \S+ kernel: "));
static JOURNAL_ISO: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?) \S+ kernel: ")
});
static KMSG_DICTIONARY: LazyLock<Regex> = LazyLock::new(|| regex(r"^ [A-Z][A-Z0-9_]*="));

/// `seconds` and a fraction of any length as µs.
fn micros(seconds: &str, fraction: &str) -> Option<u64> {
    let s: u64 = seconds.parse().ok()?;
    let digits = &fraction[..fraction.len().min(6)];
    let f: u64 = digits.parse().ok()?;
    let scale = 10u64.pow(6 - digits.len() as u32);
    s.checked_mul(1_000_000)?.checked_add(f * scale)
}

/// kmsg's µs as dmesg prints them.
pub(super) fn seconds_text(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// A monotonic `[ s.us]` prefix matched by `re`: (time, µs, rest).
fn monotonic<'a>(re: &Regex, line: &'a str) -> Option<(Option<String>, Option<u64>, &'a str)> {
    let c = re.captures(line)?;
    let (s, f) = (c.get(1)?.as_str(), c.get(2)?.as_str());
    let end = c.get(0)?.end();
    Some((Some(format!("{s}.{f}")), micros(s, f), &line[end..]))
}

/// A wall-clock prefix matched by `re`: (time, no µs, rest).
fn wall<'a>(re: &Regex, line: &'a str) -> Option<(Option<String>, Option<u64>, &'a str)> {
    let c = re.captures(line)?;
    let end = c.get(0)?.end();
    Some((Some(c.get(1)?.as_str().to_string()), None, &line[end..]))
}

/// The prefix of a non-kmsg line: (time, µs, message), or `None` for a line without one.
fn split_prefix(line: &str) -> Option<(Option<String>, Option<u64>, &str)> {
    // The journal's monotonic form first: dmesg's pattern would match it too.
    if let Some(p) = monotonic(&JOURNAL_MONOTONIC, line) {
        return Some(p);
    }
    if let Some((time, _, rest)) = wall(&JOURNAL_SHORT, line).or_else(|| wall(&JOURNAL_ISO, line)) {
        // rsyslog's kern.log keeps dmesg's timestamp in the message.
        return Some(match monotonic(&DMESG_MONOTONIC, rest) {
            Some((_, us, msg)) => (time, us, msg),
            None => (time, None, rest),
        });
    }
    monotonic(&DMESG_MONOTONIC, line)
        .or_else(|| wall(&DMESG_CTIME, line))
        .or_else(|| wall(&DMESG_ISO, line))
}

/// Every message line of `text`, in order, in any of the formats above (mixed ones too).
pub(super) fn split_log(text: &str) -> Vec<LogLine> {
    let mut out: Vec<LogLine> = Vec::new();
    // Whether the previous line had a prefix (or was a kmsg record): continuation lines follow.
    let mut after_prefix = false;
    let mut in_kmsg = false;
    for line in text.lines() {
        if let Some(r) = kmsg::parse_kmsg_record(line.as_bytes()) {
            out.extend(r.lines());
            after_prefix = true;
            in_kmsg = true;
            continue;
        }
        if in_kmsg && KMSG_DICTIONARY.is_match(line) {
            continue;
        }
        in_kmsg = false;
        if let Some((time, monotonic_us, message)) = split_prefix(line) {
            out.push(LogLine {
                time,
                monotonic_us,
                message: message.trim_start().to_string(),
            });
            after_prefix = true;
            continue;
        }
        let continues = after_prefix && line.starts_with(char::is_whitespace);
        let (time, monotonic_us) = match out.last() {
            Some(prev) if continues => (prev.time.clone(), prev.monotonic_us),
            _ => (None, None),
        };
        after_prefix = continues;
        out.push(LogLine {
            time,
            monotonic_us,
            message: line.trim_start().to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> (Option<String>, Option<u64>, String) {
        let l = split_log(line);
        assert_eq!(l.len(), 1, "{line:?}: {l:?}");
        let l = l.into_iter().next().expect("one line");
        (l.time, l.monotonic_us, l.message)
    }

    fn t(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn every_prefix() {
        let msg = "oom-kill:constraint=CONSTRAINT_MEMCG,task=a,pid=1".to_string();
        let mono = (t("7033.469562"), Some(7_033_469_562), msg.clone());
        assert_eq!(one(&format!("6,1234,7033469562,-;{msg}")), mono);
        assert_eq!(one(&format!("[ 7033.469562] {msg}")), mono);
        assert_eq!(one(&format!("<4>[ 7033.469562] {msg}")), mono);
        assert_eq!(one(&format!("kern  :warn  : [ 7033.469562] {msg}")), mono);
        assert_eq!(one(&format!("[ 7033.469562] node-a kernel: {msg}")), mono);
        assert_eq!(
            one(&format!("[Thu Nov 26 09:00:00 2026] {msg}")),
            (t("Thu Nov 26 09:00:00 2026"), None, msg.clone())
        );
        assert_eq!(
            one(&format!("[Thu Nov  6 09:00:00 2026] {msg}")),
            (t("Thu Nov  6 09:00:00 2026"), None, msg.clone())
        );
        assert_eq!(
            one(&format!("2026-11-26T09:00:00,123456+00:00 {msg}")),
            (t("2026-11-26T09:00:00,123456+00:00"), None, msg.clone())
        );
        assert_eq!(
            one(&format!("Nov 26 09:00:00 node-a kernel: {msg}")),
            (t("Nov 26 09:00:00"), None, msg.clone())
        );
        assert_eq!(
            one(&format!("Nov  6 09:00:00.123456 node-a kernel: {msg}")),
            (t("Nov  6 09:00:00.123456"), None, msg.clone())
        );
        assert_eq!(
            one(&format!("2026-11-26T09:00:00+0000 node-a kernel: {msg}")),
            (t("2026-11-26T09:00:00+0000"), None, msg.clone())
        );
        // rsyslog's kern.log: the wall time, and dmesg's stamp inside.
        assert_eq!(
            one(&format!(
                "Nov 26 09:00:00 node-a kernel: [ 7033.469562] {msg}"
            )),
            (t("Nov 26 09:00:00"), Some(7_033_469_562), msg.clone())
        );
        assert_eq!(one(&msg), (None, None, msg.clone()));
        // A task-table row is not a dmesg stamp.
        let row = "[  18884]     0 18884    14425     9320 oomt-app";
        assert_eq!(one(row), (None, None, row.to_string()));
    }

    #[test]
    fn short_fractions_and_continuations() {
        assert_eq!(micros("12", "5"), Some(12_500_000));
        assert_eq!(micros("12", "1234567"), Some(12_123_456));
        let lines = split_log(
            "[   12.000001] Memory cgroup stats for /a:\n               anon 4096\n               file 0\nplain\n",
        );
        let got: Vec<_> = lines
            .iter()
            .map(|l| (l.monotonic_us, l.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Some(12_000_001), "Memory cgroup stats for /a:"),
                (Some(12_000_001), "anon 4096"),
                (Some(12_000_001), "file 0"),
                (None, "plain"),
            ]
        );
    }

    #[test]
    fn kmsg_multi_line_records_and_dictionaries() {
        let lines = split_log(
            "6,5,1000000,-;Memory cgroup stats for /a:\\x0aanon 4096\\x0afile 0\n SUBSYSTEM=memory\n6,6,2000000,-;next\n",
        );
        let got: Vec<_> = lines
            .iter()
            .map(|l| (l.time.as_deref(), l.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("1.000000"), "Memory cgroup stats for /a:"),
                (Some("1.000000"), "anon 4096"),
                (Some("1.000000"), "file 0"),
                (Some("2.000000"), "next"),
            ]
        );
    }
}
