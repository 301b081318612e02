//! Splits a TCP or TLS byte stream into SIP messages by Content-Length, and
//! recognises RFC 5626 keepalives (CRLFCRLF ping, CRLF pong) between them.

use bytes::{Buf, BytesMut};

use super::message::{self, find_header_end, scan_content_length, Message, ParseError};

/// What the stream carried next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message.
    Message(Message),
    /// A keepalive ping (CRLFCRLF); the receiver answers with a pong.
    Ping,
    /// A keepalive pong (CRLF).
    Pong,
}

/// Why the stream cannot go on; the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The header section grew past the limit without ending.
    #[error("header section longer than {0} bytes")]
    HeadersTooLong(usize),
    /// Stream transports require Content-Length (RFC 3261 §18.3).
    #[error("message on a stream without Content-Length")]
    MissingContentLength,
    /// The announced message is larger than the limit.
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The message itself is malformed.
    #[error("malformed message: {0}")]
    Parse(#[from] ParseError),
}

/// Incremental framer for one stream connection.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max_message: usize,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer::new(message::MAX_MESSAGE_SIZE)
    }
}

impl StreamFramer {
    /// A framer that refuses messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> StreamFramer {
        StreamFramer {
            buf: BytesMut::with_capacity(4096),
            max_message,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// After an error the stream is out of sync and must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        // A ping split across two reads would be seen as two pongs; a client
        // only ever receives pongs and a server answers pings, so the cost of
        // that rare split is one unanswered ping, which the sender retries.
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.advance(4);
            return Ok(Some(Frame::Ping));
        }
        if self.buf.starts_with(b"\r\n") {
            self.buf.advance(2);
            return Ok(Some(Frame::Pong));
        }
        if self.buf.first().is_some_and(|&b| b == b'\n') {
            self.buf.advance(1);
            return Ok(Some(Frame::Pong));
        }
        let Some((head_end, body_start)) = find_header_end(&self.buf) else {
            if self.buf.len() > self.max_message {
                return Err(FramingError::HeadersTooLong(self.max_message));
            }
            return Ok(None);
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| ParseError::NotUtf8)?;
        let body_len = scan_content_length(head)?.ok_or(FramingError::MissingContentLength)?;
        let total = body_start.saturating_add(body_len);
        if total > self.max_message {
            return Err(FramingError::TooLarge(total));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let bytes = self.buf.split_to(total);
        Ok(Some(Frame::Message(message::parse(&bytes)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &str = "OPTIONS sip:a@example.test SIP/2.0\r\n\
        Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
        Call-ID: c1\r\n\
        CSeq: 1 OPTIONS\r\n\
        Content-Length: 3\r\n\r\nabc";

    #[test]
    fn frames_back_to_back_messages_split_anywhere() -> Result<(), FramingError> {
        let stream = format!("{OPTIONS}\r\n\r\n{OPTIONS}\r\n");
        for chunk in 1..stream.len() {
            let mut framer = StreamFramer::default();
            let mut frames = Vec::new();
            for piece in stream.as_bytes().chunks(chunk) {
                framer.push(piece);
                while let Some(f) = framer.next_frame()? {
                    frames.push(f);
                }
            }
            let kinds: Vec<_> = frames
                .iter()
                .map(|f| match f {
                    Frame::Message(_) => 'm',
                    Frame::Ping => 'i',
                    Frame::Pong => 'o',
                })
                .collect();
            // With 1..=3-byte chunks the CRLFCRLF may arrive split: two pongs.
            assert!(
                kinds == ['m', 'i', 'm', 'o'] || kinds == ['m', 'o', 'o', 'm', 'o'],
                "chunk {chunk}: {kinds:?}"
            );
            assert_eq!(framer.buffered(), 0);
        }
        Ok(())
    }

    #[test]
    fn missing_content_length_is_an_error() {
        let mut framer = StreamFramer::default();
        framer.push(b"OPTIONS sip:a@x SIP/2.0\r\nCall-ID: c\r\n\r\n");
        assert_eq!(framer.next_frame(), Err(FramingError::MissingContentLength));
    }

    #[test]
    fn oversized_messages_are_refused_before_buffering_them() {
        let mut framer = StreamFramer::new(1024);
        framer.push(b"OPTIONS sip:a@x SIP/2.0\r\nContent-Length: 100000\r\n\r\n");
        assert!(matches!(
            framer.next_frame(),
            Err(FramingError::TooLarge(_))
        ));

        let mut framer = StreamFramer::new(1024);
        framer.push(&[b'A'; 2000]);
        assert_eq!(framer.next_frame(), Err(FramingError::HeadersTooLong(1024)));
    }

    #[test]
    fn content_length_near_usize_max_does_not_overflow() {
        let mut framer = StreamFramer::default();
        framer.push(format!("OPTIONS sip:a@x SIP/2.0\r\nl: {}\r\n\r\n", usize::MAX).as_bytes());
        assert!(matches!(
            framer.next_frame(),
            Err(FramingError::TooLarge(_))
        ));
    }

    #[test]
    fn garbage_is_an_error() {
        let mut framer = StreamFramer::default();
        framer.push(b"\x16\x03\x01\x02\x00garbage\r\n\r\n");
        assert!(framer.next_frame().is_err());
    }
}
