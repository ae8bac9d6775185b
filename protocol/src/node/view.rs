//! [`StreamView`]: one stream of a [`Node`], borrowed, as quinn-proto's
//! `send_stream`/`recv_stream` are.

use bytes::Bytes;

use super::{Node, ReadOutcome, StreamError, StreamId, StreamRejection};

/// One stream of a node, borrowed for a few operations:
/// `node.stream(id).write(b"...")`. Each method is the [`Node`] method of
/// the same name for this stream.
#[derive(Debug)]
pub struct StreamView<'a> {
    node: &'a mut Node,
    id: StreamId,
}

impl Node {
    /// Stream `id`, borrowed (see [`StreamView`]). Whether it exists is
    /// checked by each operation (an unknown stream fails with
    /// [`StreamError::UnknownStream`]).
    pub fn stream(&mut self, id: StreamId) -> StreamView<'_> {
        StreamView { node: self, id }
    }
}

impl StreamView<'_> {
    /// The stream.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// [`Node::write`].
    pub fn write(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        self.node.write(self.id, data)
    }

    /// [`Node::write_chunks`].
    pub fn write_chunks(&mut self, data: &mut [Bytes]) -> Result<usize, StreamError> {
        self.node.write_chunks(self.id, data)
    }

    /// [`Node::read`].
    pub fn read(&mut self, max: usize) -> Result<ReadOutcome, StreamError> {
        self.node.read(self.id, max)
    }

    /// [`Node::discard_received`].
    pub fn discard_received(&mut self) -> Result<bool, StreamError> {
        self.node.discard_received(self.id)
    }

    /// [`Node::finish`].
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.node.finish(self.id)
    }

    /// [`Node::reset`].
    pub fn reset(&mut self, code: u64) -> Result<(), StreamError> {
        self.node.reset(self.id, code)
    }

    /// [`Node::stop`].
    pub fn stop(&mut self, code: u64) -> Result<(), StreamError> {
        self.node.stop(self.id, code)
    }

    /// [`Node::reject`].
    pub fn reject(&mut self, why: StreamRejection) {
        self.node.reject(self.id, why)
    }

    /// [`Node::release`]: the application is done with the stream.
    pub fn release(self) {
        self.node.release(self.id)
    }
}
