//! A minimal server-sent events decoder: bytes in, the `data` of each complete event out.
//! Only what chat-completions streams use: `data:` fields (joined with `\n` when an event has
//! several), comments and other fields ignored, events separated by a blank line.

/// A line longer than this is refused, so a broken server cannot make us buffer without end.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Default)]
pub(super) struct SseDecoder {
    /// Bytes of the line not yet terminated (a chunk may end in the middle of a line, or even of
    /// a UTF-8 character).
    partial: Vec<u8>,
    /// `data` lines of the event being read.
    data: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum SseError {
    #[error("an event stream line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("an event stream line is not UTF-8")]
    NotUtf8,
}

impl SseDecoder {
    /// Feeds `chunk`; returns the data of every event it completes, in order.
    pub(super) fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, SseError> {
        let mut complete = Vec::new();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&byte| byte == b'\n') {
            self.partial.extend_from_slice(&rest[..newline]);
            rest = &rest[newline + 1..];
            let line = std::mem::take(&mut self.partial);
            if let Some(data) = self.line(line)? {
                complete.push(data);
            }
        }
        if self.partial.len() + rest.len() > MAX_LINE {
            return Err(SseError::LineTooLong);
        }
        self.partial.extend_from_slice(rest);
        Ok(complete)
    }

    /// The event still pending when the stream ends without its closing blank line.
    pub(super) fn finish(&mut self) -> Result<Option<String>, SseError> {
        let line = std::mem::take(&mut self.partial);
        if let Some(data) = self.line(line)? {
            return Ok(Some(data));
        }
        Ok(self.dispatch())
    }

    fn line(&mut self, mut line: Vec<u8>) -> Result<Option<String>, SseError> {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        let line = String::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if let Some(value) = line.strip_prefix("data:") {
            self.data
                .push(value.strip_prefix(' ').unwrap_or(value).to_owned());
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<String> {
        if self.data.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.data).join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_on_blank_lines_whatever_the_chunking() {
        let stream = "data: {\"a\":1}\n\n: a comment\nevent: x\ndata: two\r\ndata: lines\r\n\r\ndata: [DONE]\n\n";
        let expected = vec!["{\"a\":1}", "two\nlines", "[DONE]"];
        for chunk_size in [1, 2, 5, stream.len()] {
            let mut decoder = SseDecoder::default();
            let mut events = Vec::new();
            for chunk in stream.as_bytes().chunks(chunk_size) {
                events.extend(decoder.push(chunk).expect("valid"));
            }
            assert_eq!(decoder.finish().expect("valid"), None);
            assert_eq!(events, expected, "chunk size {chunk_size}");
        }
    }

    #[test]
    fn a_character_split_across_chunks_is_reassembled() {
        let bytes = "data: héllo\n\n".as_bytes();
        let split = bytes.iter().position(|&b| b >= 0x80).expect("non-ascii") + 1;
        let mut decoder = SseDecoder::default();
        assert!(decoder.push(&bytes[..split]).expect("valid").is_empty());
        assert_eq!(decoder.push(&bytes[split..]).expect("valid"), vec!["héllo"]);
    }

    #[test]
    fn an_event_without_its_closing_blank_line_is_delivered_at_the_end() {
        let mut decoder = SseDecoder::default();
        assert!(decoder.push(b"data: last").expect("valid").is_empty());
        assert_eq!(decoder.finish().expect("valid").as_deref(), Some("last"));
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut decoder = SseDecoder::default();
        let chunk = vec![b'x'; MAX_LINE / 2 + 1];
        assert!(decoder.push(&chunk).is_ok());
        assert_eq!(decoder.push(&chunk), Err(SseError::LineTooLong));
    }
}
