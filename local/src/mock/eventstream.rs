//! Minimal AWS event-stream (`application/vnd.amazon.eventstream`) encoder.
//!
//! Frame layout:
//! ```text
//! [total length u32 BE][headers length u32 BE][prelude CRC32 of the previous 8 bytes]
//! [headers ...][payload ...]
//! [message CRC32 of everything before it]
//! ```
//! Each header: name length (u8), name, value type (7 = string),
//! value length (u16 BE), value.

use bytes::{BufMut, Bytes, BytesMut};

/// Header value type tag for UTF-8 strings.
const HEADER_TYPE_STRING: u8 = 7;
/// Prelude (12 bytes) plus trailing message CRC (4 bytes).
const FRAME_OVERHEAD: usize = 16;

/// Encodes one event-stream message with string headers.
///
/// Header names longer than 255 bytes and values longer than 65535 bytes are
/// truncated (the mocks never produce such headers).
pub fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut header_bytes = BytesMut::new();
    for (name, value) in headers {
        let name = name.as_bytes();
        let name = &name[..name.len().min(usize::from(u8::MAX))];
        let value = value.as_bytes();
        let value = &value[..value.len().min(usize::from(u16::MAX))];
        header_bytes.put_u8(u8::try_from(name.len()).unwrap_or(u8::MAX));
        header_bytes.put_slice(name);
        header_bytes.put_u8(HEADER_TYPE_STRING);
        header_bytes.put_u16(u16::try_from(value.len()).unwrap_or(u16::MAX));
        header_bytes.put_slice(value);
    }

    let total_len = FRAME_OVERHEAD + header_bytes.len() + payload.len();
    let mut frame = BytesMut::with_capacity(total_len);
    frame.put_u32(u32::try_from(total_len).unwrap_or(u32::MAX));
    frame.put_u32(u32::try_from(header_bytes.len()).unwrap_or(u32::MAX));
    let prelude_crc = crc32fast::hash(&frame[..8]);
    frame.put_u32(prelude_crc);
    frame.put_slice(&header_bytes);
    frame.put_slice(payload);
    let message_crc = crc32fast::hash(&frame);
    frame.put_u32(message_crc);
    frame.freeze()
}

/// Encodes a Bedrock-style event: `:event-type` = `event_type`,
/// `:content-type` = `application/json`, `:message-type` = `event`.
pub fn event_frame(event_type: &str, payload: &[u8]) -> Bytes {
    encode_message(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Independent decoder used to check the encoder's output.
    fn decode(frame: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
        let total = be32(&frame[0..4]) as usize;
        let headers_len = be32(&frame[4..8]) as usize;
        assert_eq!(total, frame.len(), "total length field");
        assert_eq!(
            be32(&frame[8..12]),
            crc32fast::hash(&frame[..8]),
            "prelude crc"
        );
        assert_eq!(
            be32(&frame[total - 4..]),
            crc32fast::hash(&frame[..total - 4]),
            "message crc"
        );
        let mut headers = Vec::new();
        let mut pos = 12;
        let end = 12 + headers_len;
        while pos < end {
            let name_len = frame[pos] as usize;
            pos += 1;
            let name = String::from_utf8(frame[pos..pos + name_len].to_vec()).unwrap();
            pos += name_len;
            assert_eq!(frame[pos], 7, "string header type");
            pos += 1;
            let value_len = u16::from_be_bytes([frame[pos], frame[pos + 1]]) as usize;
            pos += 2;
            let value = String::from_utf8(frame[pos..pos + value_len].to_vec()).unwrap();
            pos += value_len;
            headers.push((name, value));
        }
        assert_eq!(pos, end, "headers length matches header bytes");
        (headers, frame[end..total - 4].to_vec())
    }

    #[test]
    fn empty_message_layout() {
        let frame = encode_message(&[], b"");
        assert_eq!(frame.len(), 16);
        assert_eq!(&frame[0..4], &16u32.to_be_bytes());
        assert_eq!(&frame[4..8], &0u32.to_be_bytes());
        assert_eq!(&frame[8..12], &crc32fast::hash(&frame[..8]).to_be_bytes());
        assert_eq!(&frame[12..16], &crc32fast::hash(&frame[..12]).to_be_bytes());
    }

    #[test]
    fn known_vector_from_aws_spec() {
        // "empty message" test vector from the AWS event-stream test suite:
        // total 16, headers 0, prelude crc 0x05c248eb, message crc 0x7d98c8ff.
        let frame = encode_message(&[], b"");
        assert_eq!(
            frame.as_ref(),
            &[0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff]
        );
    }

    #[test]
    fn header_and_payload_layout() {
        let payload = br#"{"bytes":"eyJ0eXBlIjoibWVzc2FnZV9zdG9wIn0="}"#;
        let frame = event_frame("chunk", payload);

        let expected_headers_len = (1 + 11 + 1 + 2 + 5) // :event-type / chunk
            + (1 + 13 + 1 + 2 + 16) // :content-type / application/json
            + (1 + 13 + 1 + 2 + 5); // :message-type / event
        assert_eq!(be32(&frame[4..8]) as usize, expected_headers_len);
        assert_eq!(frame.len(), 16 + expected_headers_len + payload.len());

        // First header byte-for-byte.
        assert_eq!(frame[12], 11);
        assert_eq!(&frame[13..24], b":event-type");
        assert_eq!(frame[24], 7);
        assert_eq!(&frame[25..27], &5u16.to_be_bytes());
        assert_eq!(&frame[27..32], b"chunk");

        let (headers, body) = decode(&frame);
        assert_eq!(
            headers,
            vec![
                (":event-type".to_string(), "chunk".to_string()),
                (":content-type".to_string(), "application/json".to_string()),
                (":message-type".to_string(), "event".to_string()),
            ]
        );
        assert_eq!(body, payload.to_vec());
    }

    #[test]
    fn crc_detects_corruption() {
        let frame = event_frame("messageStart", br#"{"role":"assistant"}"#);
        let mut corrupted = frame.to_vec();
        let idx = corrupted.len() - 6;
        corrupted[idx] ^= 0xff;
        let n = corrupted.len();
        assert_ne!(
            be32(&corrupted[n - 4..]),
            crc32fast::hash(&corrupted[..n - 4])
        );
    }
}
