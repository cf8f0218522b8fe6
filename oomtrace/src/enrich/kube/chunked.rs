//! HTTP/1.1 `Transfer-Encoding: chunked` decoding, without I/O: bytes in, body bytes out.
//!
//! A chunked body is `<hex size>[;ext]\r\n<data>\r\n` repeated, ended by a zero-size chunk,
//! optional trailer lines and an empty line. Bare `\n` line ends are tolerated. The decoder
//! takes input in pieces of any size (a chunk header may be split across reads) and never
//! panics on bad input: it returns [`ChunkError`].

use std::fmt;

/// Longest chunk-size line (size, extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most trailer bytes accepted in total.
const MAX_TRAILERS: usize = 16 * 1024;
/// Most hex digits in a chunk size (16 would overflow `u64` checks; 15 is 1 EiB).
const MAX_SIZE_DIGITS: usize = 15;

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChunkError(&'static str);

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad chunked encoding: {}", self.0)
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the chunk-size line: `value` so far, `digits` read, `ext` once past the digits.
    Size {
        value: u64,
        digits: usize,
        ext: bool,
        len: usize,
    },
    /// Saw `\r` at the end of the size line.
    SizeLf {
        value: u64,
        digits: usize,
    },
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// After chunk data: expecting `\r\n` (or `\n`).
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty one. `len` is the current line's.
    Trailer {
        len: usize,
    },
    TrailerLf {
        len: usize,
    },
    Done,
}

/// Incremental decoder of one chunked body.
#[derive(Debug, Clone)]
pub(super) struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub(super) fn new() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
                ext: false,
                len: 0,
            },
            trailer_bytes: 0,
        }
    }

    /// True once the terminating zero-size chunk and the trailer section have been read.
    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending body bytes to `out`. Returns how many input bytes were
    /// consumed: all of them, unless the body ended inside `input` (the rest is not part of it).
    pub(super) fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            if let State::Data(left) = self.state {
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - i);
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            if self.state == State::Done {
                return Ok(i);
            }
            self.step(input[i])?;
            i += 1;
        }
        Ok(i)
    }

    /// Advances over one byte outside chunk data.
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size {
                value,
                digits,
                ext,
                len,
            } => {
                if len >= MAX_LINE {
                    return Err(ChunkError("chunk-size line too long"));
                }
                match b {
                    b'\r' => State::SizeLf { value, digits },
                    b'\n' => Self::end_of_size(value, digits)?,
                    _ if ext => State::Size {
                        value,
                        digits,
                        ext,
                        len: len + 1,
                    },
                    b';' | b' ' | b'\t' => State::Size {
                        value,
                        digits,
                        ext: true,
                        len: len + 1,
                    },
                    _ => {
                        let d = hex_digit(b).ok_or(ChunkError("chunk size is not hexadecimal"))?;
                        if digits >= MAX_SIZE_DIGITS {
                            return Err(ChunkError("chunk size too large"));
                        }
                        State::Size {
                            value: value * 16 + u64::from(d),
                            digits: digits + 1,
                            ext,
                            len: len + 1,
                        }
                    }
                }
            }
            State::SizeLf { value, digits } => {
                if b != b'\n' {
                    return Err(ChunkError("chunk-size line: CR without LF"));
                }
                Self::end_of_size(value, digits)?
            }
            State::DataCr => match b {
                b'\r' => State::DataLf,
                b'\n' => Self::size_start(),
                _ => return Err(ChunkError("chunk data longer than its size")),
            },
            State::DataLf => match b {
                b'\n' => Self::size_start(),
                _ => return Err(ChunkError("chunk data: CR without LF")),
            },
            State::Trailer { len } => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILERS || len >= MAX_LINE {
                    return Err(ChunkError("trailers too long"));
                }
                match b {
                    b'\r' => State::TrailerLf { len },
                    b'\n' if len == 0 => State::Done,
                    b'\n' => State::Trailer { len: 0 },
                    _ => State::Trailer { len: len + 1 },
                }
            }
            State::TrailerLf { len } => match b {
                b'\n' if len == 0 => State::Done,
                b'\n' => State::Trailer { len: 0 },
                _ => return Err(ChunkError("trailer: CR without LF")),
            },
            // `decode` handles these two before calling `step`.
            State::Data(_) | State::Done => self.state,
        };
        Ok(())
    }

    fn end_of_size(value: u64, digits: usize) -> Result<State, ChunkError> {
        if digits == 0 {
            return Err(ChunkError("empty chunk size"));
        }
        Ok(if value == 0 {
            State::Trailer { len: 0 }
        } else {
            State::Data(value)
        })
    }

    fn size_start() -> State {
        State::Size {
            value: 0,
            digits: 0,
            ext: false,
            len: 0,
        }
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the body and consumed count.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(step) {
            let n = d.decode(piece, &mut out)?;
            consumed += n;
            if d.is_done() {
                break;
            }
        }
        Ok((out, consumed, d.is_done()))
    }

    #[test]
    fn decodes_whole_and_byte_by_byte() {
        let input = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
        for step in [1, 2, 3, 5, 7, input.len()] {
            let (out, consumed, done) = decode_in_steps(input, step).expect("valid");
            assert_eq!(out, b"hello, world", "step {step}");
            assert_eq!(consumed, input.len(), "step {step}");
            assert!(done);
        }
    }

    #[test]
    fn hex_sizes_extensions_trailers_and_bare_lf() {
        let mut body = b"1A;name=value\r\n".to_vec();
        body.extend_from_slice(&[b'x'; 26]);
        body.extend_from_slice(b"\r\na \n0123456789\n0\r\nExpires: never\r\nX: y\r\n\r\n");
        let (out, _, done) = decode_in_steps(&body, 4).expect("valid");
        let mut want = vec![b'x'; 26];
        want.extend_from_slice(b"0123456789");
        assert_eq!(out, want);
        assert!(done);
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let input = b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK";
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let n = d.decode(input, &mut out).expect("valid");
        assert_eq!(n, input.len() - b"HTTP/1.1 200 OK".len());
        assert!(d.is_done());
        assert_eq!(out, b"abc");
        // Further input is not consumed.
        assert_eq!(d.decode(b"more", &mut out).expect("done"), 0);
    }

    #[test]
    fn incomplete_body_is_not_done() {
        let (out, consumed, done) = decode_in_steps(b"5\r\nhel", 2).expect("valid so far");
        assert_eq!(out, b"hel");
        assert_eq!(consumed, 6);
        assert!(!done);
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"\n",
            b"3\r\nabcd\r\n",
            b"3\r\nabc\rX",
            b"3\rX",
            b"10000000000000000\r\n",
            b"0\r\nX: y\rZ",
        ] {
            let mut d = ChunkedDecoder::new();
            assert!(d.decode(bad, &mut Vec::new()).is_err(), "{bad:?}");
        }
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'e', MAX_LINE));
        assert!(ChunkedDecoder::new()
            .decode(&long, &mut Vec::new())
            .is_err());
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..MAX_TRAILERS / 8 {
            trailers.extend_from_slice(b"X-A: 123\r\n");
        }
        assert!(ChunkedDecoder::new()
            .decode(&trailers, &mut Vec::new())
            .is_err());
    }
}
