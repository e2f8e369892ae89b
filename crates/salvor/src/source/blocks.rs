//! Streams a source produces a block at a time (an API page, a database
//! document), read as bytes. The source's own error is kept for the caller,
//! since the `io::Error` a reader must return would flatten its kind and hint.

use std::io::{self, Read};

/// Produces a stream one block at a time.
pub(super) trait BlockSource {
    type Error;
    /// Replaces `block` with the next block; `false` at the end.
    ///
    /// # Errors
    /// The source's own failure, kept by [`BlockReader`].
    fn next_block(&mut self, block: &mut Vec<u8>) -> Result<bool, Self::Error>;
    /// The one-line message a reader reports for `e`.
    fn message(e: &Self::Error) -> String;
}

/// Reads a [`BlockSource`] as one byte stream.
pub(super) struct BlockReader<S: BlockSource> {
    pub(super) source: S,
    block: Vec<u8>,
    pos: usize,
    /// The first failure, as the source reported it.
    pub(super) error: Option<S::Error>,
}

impl<S: BlockSource> BlockReader<S> {
    pub(super) fn new(source: S) -> Self {
        Self {
            source,
            block: Vec::new(),
            pos: 0,
            error: None,
        }
    }
}

impl<S: BlockSource> Read for BlockReader<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            match self.source.next_block(&mut self.block) {
                Ok(true) => self.pos = 0,
                Ok(false) => return Ok(0),
                Err(e) => {
                    let msg = S::message(&e);
                    self.error = Some(e);
                    return Err(io::Error::other(msg));
                }
            }
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
