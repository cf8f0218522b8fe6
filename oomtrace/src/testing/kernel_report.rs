//! The kernel's own OOM report as the tests' oracle: a follower of `/dev/kmsg` that sees only
//! what is logged after it opened ([`Kmsg`]). The parsing is the product's
//! ([`crate::capture::kernel_log`]), re-exported here.
use std::{
    collections::VecDeque,
    fs::File,
    io::{Seek, SeekFrom},
    time::{Duration, Instant},
};

pub use crate::capture::kernel_log::*;
use crate::capture::kernel_log::{open_nonblocking, read_available};

/// A non-blocking reader of the kernel log that sees only records logged after it was opened.
pub struct Kmsg {
    file: File,
    /// Records read but not yet handed out by [`Kmsg::wait_for`].
    pending: VecDeque<KmsgRecord>,
}

impl Kmsg {
    /// Opens `/dev/kmsg` (needs root or `CAP_SYSLOG`) positioned after the newest record.
    pub fn open_at_end() -> Result<Self, KmsgError> {
        let mut file = open_nonblocking()?;
        file.seek(SeekFrom::End(0)).map_err(KmsgError::Open)?;
        Ok(Self {
            file,
            pending: VecDeque::new(),
        })
    }

    /// Every record logged since the last call (or since opening), in order. Records the
    /// kernel overwrote before we read them are skipped (visible as `seq` gaps).
    pub fn read_available(&mut self) -> Result<Vec<KmsgRecord>, KmsgError> {
        let mut out: Vec<KmsgRecord> = self.pending.drain(..).collect();
        read_available(&mut self.file, &mut out)?;
        Ok(out)
    }

    /// Feeds new records to `f`, polling every 20 ms, until it returns a value (`Ok(Some)`) or
    /// `timeout` passes (`Ok(None)`).
    pub fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&KmsgRecord) -> Option<T>,
    ) -> Result<Option<T>, KmsgError> {
        let deadline = Instant::now() + timeout;
        loop {
            let fresh = self.read_available()?;
            self.pending.extend(fresh);
            // Records after the one found stay for the next call.
            while let Some(r) = self.pending.pop_front() {
                if let Some(v) = f(&r) {
                    return Ok(Some(v));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a marker to the kernel log and reads it back; skipped without root.
    #[test]
    fn kmsg_round_trip() {
        let Ok(mut kmsg) = Kmsg::open_at_end() else {
            eprintln!("skipped: /dev/kmsg not readable");
            return;
        };
        let marker = format!("oomtrace kernel_report self-test {}", std::process::id());
        let Ok(mut w) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") else {
            eprintln!("skipped: /dev/kmsg not writable");
            return;
        };
        std::io::Write::write_all(&mut w, format!("{marker}\tend\n").as_bytes()).expect("write");
        let found = kmsg
            .wait_for(Duration::from_secs(5), |r| {
                r.message.contains(&marker).then(|| r.clone())
            })
            .expect("read");
        let r = found.expect("marker seen");
        assert!(
            r.message.ends_with(&format!("{marker}\tend")),
            "{:?}",
            r.message
        );
        // Nothing older than the open was returned, and nothing is pending now.
        assert!(kmsg
            .read_available()
            .expect("read")
            .iter()
            .all(|r| !r.message.contains(&marker)));
    }
}
