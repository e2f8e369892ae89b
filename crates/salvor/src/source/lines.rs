//! Line-by-line views of a dump stream, for the sources that count or filter
//! SQL dumps (postgres, mysql) while the bytes stream through unchanged.
//!
//! Lines are found with `memchr` and handed out as slices of the read buffer;
//! only a line cut by a read boundary is copied. A dump is hundreds of MB of
//! short rows, so this path must not allocate per line.

use std::io::{self, Read, Write};

/// Receives a dump one complete line at a time (the last may lack its newline).
pub(super) trait LineSink {
    /// Handles one line, newline included.
    ///
    /// # Errors
    /// Whatever the sink's output fails with.
    fn line(&mut self, line: &[u8]) -> io::Result<()>;
}

/// Splits a byte stream into lines, buffering only a line cut by a read.
#[derive(Default)]
struct Splitter {
    partial: Vec<u8>,
}

impl Splitter {
    fn feed(&mut self, data: &[u8], sink: &mut impl LineSink) -> io::Result<()> {
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', data) {
            let line = &data[start..=end];
            if self.partial.is_empty() {
                sink.line(line)?;
            } else {
                self.partial.extend_from_slice(line);
                sink.line(&self.partial)?;
                self.partial.clear();
            }
            start = end + 1;
        }
        self.partial.extend_from_slice(&data[start..]);
        Ok(())
    }

    fn finish(&mut self, sink: &mut impl LineSink) -> io::Result<()> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let last = std::mem::take(&mut self.partial);
        sink.line(&last)
    }
}

/// A reader that shows every line passing through it to a sink.
pub(super) struct ScanReader<R, S> {
    inner: R,
    /// The sink, holding whatever it gathered.
    pub(super) sink: S,
    split: Splitter,
}

impl<R: Read, S: LineSink> ScanReader<R, S> {
    /// Wraps `inner`.
    pub(super) fn new(inner: R, sink: S) -> Self {
        Self {
            inner,
            sink,
            split: Splitter::default(),
        }
    }
}

impl<R: Read, S: LineSink> Read for ScanReader<R, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.split.finish(&mut self.sink)?;
        } else {
            self.split.feed(&buf[..n], &mut self.sink)?;
        }
        Ok(n)
    }
}

/// A writer that hands its input to a sink line by line.
pub(super) struct LineWriter<S> {
    sink: S,
    split: Splitter,
}

impl<S: LineSink> LineWriter<S> {
    /// Wraps `sink`.
    pub(super) fn new(sink: S) -> Self {
        Self {
            sink,
            split: Splitter::default(),
        }
    }

    /// Passes on the last, unterminated line and returns the sink.
    ///
    /// # Errors
    /// The sink's.
    pub(super) fn finish(mut self) -> io::Result<S> {
        self.split.finish(&mut self.sink)?;
        Ok(self.sink)
    }
}

impl<S: LineSink> Write for LineWriter<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.split.feed(buf, &mut self.sink)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Strips one trailing `\n` (and a `\r` before it).
pub(super) fn trim_newline(l: &[u8]) -> &[u8] {
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// Feeds `text` to `sink` in pieces of `chunk` bytes, as reads would.
#[cfg(test)]
pub(super) fn feed_in_chunks<S: LineSink>(sink: S, text: &str, chunk: usize) -> S {
    let mut w = LineWriter::new(sink);
    for c in text.as_bytes().chunks(chunk) {
        w.write_all(c).unwrap();
    }
    w.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<Vec<u8>>);

    impl LineSink for Collect {
        fn line(&mut self, line: &[u8]) -> io::Result<()> {
            self.0.push(line.to_vec());
            Ok(())
        }
    }

    #[test]
    fn lines_survive_any_read_boundary() {
        let text = "one\ntwo\n\nthree\nlast without newline";
        for chunk in 1..=text.len() {
            let got = feed_in_chunks(Collect::default(), text, chunk).0;
            let want: Vec<&[u8]> = vec![
                b"one\n",
                b"two\n",
                b"\n",
                b"three\n",
                b"last without newline",
            ];
            assert_eq!(got, want, "chunk {chunk}");
        }
    }
}
