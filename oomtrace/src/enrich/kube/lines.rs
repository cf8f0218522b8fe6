//! Splits a byte stream into `\n`-terminated lines (a watch response is newline-delimited
//! JSON), whatever the pieces it arrives in. A line longer than the limit is dropped whole and
//! reported once, when its end arrives; memory stays bounded by the limit.

/// A line was longer than the splitter's limit and was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LineTooLong;

/// Incremental line splitter.
#[derive(Debug)]
pub(super) struct LineSplitter {
    buf: Vec<u8>,
    /// Start of the first unreturned line in `buf`.
    start: usize,
    /// `buf[start..scanned]` holds no `\n`.
    scanned: usize,
    max: usize,
    /// Dropping the rest of an over-long line.
    discarding: bool,
}

impl LineSplitter {
    /// A splitter whose lines may be at most `max` bytes (without the line end).
    pub(super) fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max,
            discarding: false,
        }
    }

    /// Adds stream bytes; take the complete lines out with [`Self::next_line`].
    pub(super) fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete line, without its `\n` or `\r\n`; `None` until more bytes arrive.
    pub(super) fn next_line(&mut self) -> Option<Result<&[u8], LineTooLong>> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let end = self.scanned + offset;
                let line_start = self.start;
                self.start = end + 1;
                self.scanned = self.start;
                if std::mem::take(&mut self.discarding) || end - line_start > self.max + 1 {
                    return Some(Err(LineTooLong));
                }
                let mut line = &self.buf[line_start..end];
                if let [rest @ .., b'\r'] = line {
                    line = rest;
                }
                if line.len() > self.max {
                    return Some(Err(LineTooLong));
                }
                Some(Ok(line))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() - self.start > self.max + 1 {
                    // Keep nothing of an over-long line; report it when it ends.
                    self.buf.clear();
                    self.start = 0;
                    self.scanned = 0;
                    self.discarding = true;
                }
                None
            }
        }
    }

    /// Bytes of an unterminated last line (a stream should end with `\n`).
    pub(super) fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(s: &mut LineSplitter) -> Vec<Result<String, LineTooLong>> {
        let mut out = Vec::new();
        while let Some(line) = s.next_line() {
            out.push(line.map(|l| String::from_utf8_lossy(l).into_owned()));
        }
        out
    }

    #[test]
    fn splits_across_pieces_of_any_size() {
        let stream = b"{\"a\":1}\n{\"b\":2}\r\n\n{\"c\":3}\n";
        for step in 1..=stream.len() {
            let mut s = LineSplitter::new(100);
            let mut lines = Vec::new();
            for piece in stream.chunks(step) {
                s.push(piece);
                lines.extend(collect(&mut s));
            }
            let want: Vec<Result<String, LineTooLong>> =
                ["{\"a\":1}", "{\"b\":2}", "", "{\"c\":3}"]
                    .iter()
                    .map(|l| Ok(l.to_string()))
                    .collect();
            assert_eq!(lines, want, "step {step}");
            assert_eq!(s.pending(), 0);
        }
    }

    #[test]
    fn keeps_an_unterminated_tail() {
        let mut s = LineSplitter::new(100);
        s.push(b"one\ntw");
        assert_eq!(collect(&mut s), vec![Ok("one".to_string())]);
        assert_eq!(s.pending(), 2);
        s.push(b"o\n");
        assert_eq!(collect(&mut s), vec![Ok("two".to_string())]);
    }

    #[test]
    fn drops_over_long_lines_once_and_recovers() {
        let mut s = LineSplitter::new(8);
        s.push(b"short\n0123456789");
        assert_eq!(collect(&mut s), vec![Ok("short".to_string())]);
        s.push(b"abcdefghij");
        assert_eq!(collect(&mut s), vec![]);
        assert!(s.pending() < 20, "memory stays bounded");
        s.push(b"xyz\nok\n12345678\n123456789\n");
        assert_eq!(
            collect(&mut s),
            vec![
                Err(LineTooLong),
                Ok("ok".to_string()),
                Ok("12345678".to_string()),
                Err(LineTooLong),
            ]
        );
        // An over-long line that ends within one push.
        s.push(b"0123456789abcdef\nfine\n");
        assert_eq!(
            collect(&mut s),
            vec![Err(LineTooLong), Ok("fine".to_string())]
        );
    }
}
