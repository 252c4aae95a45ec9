//! Decoding AWS event-stream frames (`application/vnd.amazon.eventstream`), which Bedrock streams use.
//! The gateway relays frames untouched; it decodes them only to read token usage for the audit trail.
//!
//! Frame: total length (u32 BE), headers length (u32 BE), prelude CRC32, headers, payload, message CRC32.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub event_type: Option<String>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is impossible")]
    BadLength(usize),
    #[error("frame checksum mismatch")]
    Checksum,
    #[error("frame headers are malformed")]
    Headers,
}

/// Accumulates bytes and yields complete frames; keeps at most one partial frame.
#[derive(Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
}

const PRELUDE: usize = 12;
const MAX_FRAME: usize = 16 * 1024 * 1024;

impl FrameDecoder {
    pub fn feed(&mut self, data: &[u8]) -> Vec<Result<Frame, FrameError>> {
        self.buffer.extend_from_slice(data);
        let mut frames = Vec::new();
        loop {
            if self.buffer.len() < PRELUDE {
                break;
            }
            let total = u32_at(&self.buffer, 0) as usize;
            if !(PRELUDE + 4..=MAX_FRAME).contains(&total) {
                frames.push(Err(FrameError::BadLength(total)));
                self.buffer.clear();
                break;
            }
            if self.buffer.len() < total {
                break;
            }
            let frame: Vec<u8> = self.buffer.drain(..total).collect();
            frames.push(parse(&frame));
        }
        frames
    }
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

fn parse(frame: &[u8]) -> Result<Frame, FrameError> {
    let total = frame.len();
    let headers_len = u32_at(frame, 4) as usize;
    if crc32fast::hash(&frame[..8]) != u32_at(frame, 8)
        || crc32fast::hash(&frame[..total - 4]) != u32_at(frame, total - 4)
    {
        return Err(FrameError::Checksum);
    }
    if PRELUDE + headers_len > total - 4 {
        return Err(FrameError::Headers);
    }
    let headers = &frame[PRELUDE..PRELUDE + headers_len];
    let payload = frame[PRELUDE + headers_len..total - 4].to_vec();
    Ok(Frame {
        event_type: event_type(headers)?,
        payload,
    })
}

/// Reads the `:event-type` string header; other headers are skipped by their declared type sizes.
fn event_type(mut headers: &[u8]) -> Result<Option<String>, FrameError> {
    let mut found = None;
    while !headers.is_empty() {
        let name_len = *headers.first().ok_or(FrameError::Headers)? as usize;
        let name = headers.get(1..1 + name_len).ok_or(FrameError::Headers)?;
        let kind = *headers.get(1 + name_len).ok_or(FrameError::Headers)?;
        let rest = &headers[2 + name_len..];
        let value_len = match kind {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            6 | 7 => {
                let len = rest.get(..2).ok_or(FrameError::Headers)?;
                2 + u16::from_be_bytes([len[0], len[1]]) as usize
            }
            9 => 16,
            _ => return Err(FrameError::Headers),
        };
        let value = rest.get(..value_len).ok_or(FrameError::Headers)?;
        if kind == 7 && name == b":event-type" {
            found = Some(String::from_utf8_lossy(&value[2..]).into_owned());
        }
        headers = &rest[value_len..];
    }
    Ok(found)
}

/// One event-stream frame with string headers (prelude, CRCs and all), as AWS services write them.
pub fn encode_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::new();
    for (name, value) in headers {
        encoded.push(name.len() as u8);
        encoded.extend_from_slice(name.as_bytes());
        // Header value type 7: a string with a 16-bit length.
        encoded.push(7);
        encoded.extend_from_slice(&(value.len() as u16).to_be_bytes());
        encoded.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE + encoded.len() + payload.len() + 4;
    let mut frame = Vec::with_capacity(total);
    frame.extend_from_slice(&(total as u32).to_be_bytes());
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&crc.to_be_bytes());
    frame.extend_from_slice(&encoded);
    frame.extend_from_slice(payload);
    let crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&crc.to_be_bytes());
    frame
}

#[cfg(test)]
pub(crate) fn encode(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode_frame(
        &[(":event-type", event_type), (":message-type", "event")],
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_frames_split_across_chunks() {
        let mut stream = encode("messageStart", br#"{"role":"assistant"}"#);
        stream.extend(encode("metadata", br#"{"usage":{"inputTokens":3}}"#));
        let mut decoder = FrameDecoder::default();
        let mut frames = Vec::new();
        for chunk in stream.chunks(7) {
            frames.extend(decoder.feed(chunk));
        }
        let frames: Vec<Frame> = frames.into_iter().map(Result::unwrap).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].event_type.as_deref(), Some("messageStart"));
        assert_eq!(frames[1].payload, br#"{"usage":{"inputTokens":3}}"#);
    }

    #[test]
    fn rejects_corrupted_frames() {
        let mut frame = encode("chunk", b"{}");
        let last = frame.len() - 6;
        frame[last] ^= 0xff;
        let results = FrameDecoder::default().feed(&frame);
        assert_eq!(results, vec![Err(FrameError::Checksum)]);
    }
}
