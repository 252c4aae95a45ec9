//! The file's text encoding: UTF-8 (a BOM is dropped) or CP932 (Shift_JIS with Microsoft's extensions,
//! what Excel in Japan writes as "CSV"). Decoding never replaces a byte it cannot read: such a file is
//! refused whole, since a mangled name or address would be applied as if it were right.

use super::FileError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceEncoding {
    Utf8,
    Utf8Bom,
    Cp932,
}

impl SourceEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceEncoding::Utf8 => "utf-8",
            SourceEncoding::Utf8Bom => "utf-8-bom",
            SourceEncoding::Cp932 => "cp932",
        }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

pub fn decode(bytes: &[u8]) -> Result<(String, SourceEncoding), FileError> {
    if let Some(offset) = bytes.iter().position(|b| *b == 0) {
        return Err(FileError::Binary { offset });
    }
    if let Some(rest) = bytes.strip_prefix(BOM) {
        return std::str::from_utf8(rest)
            .map(|text| (text.to_string(), SourceEncoding::Utf8Bom))
            .map_err(|e| FileError::Encoding {
                offset: BOM.len() + e.valid_up_to(),
            });
    }
    let utf8_error = match std::str::from_utf8(bytes) {
        Ok(text) => return Ok((text.to_string(), SourceEncoding::Utf8)),
        Err(e) => e,
    };
    // encoding_rs's Shift_JIS is the WHATWG one, i.e. Windows-31J (CP932), NEC and IBM extensions
    // included. `decode_without_bom_handling_and_without_replacement` answers None on any bad byte.
    match encoding_rs::SHIFT_JIS.decode_without_bom_handling_and_without_replacement(bytes) {
        Some(text) => Ok((text.into_owned(), SourceEncoding::Cp932)),
        None => Err(FileError::Encoding {
            offset: utf8_error.valid_up_to(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_encoding_excel_writes_decodes_to_the_same_text() {
        let text = "user_id,name\r\n001,山田太郎\r\n002,髙橋①\r\n";
        let (cp932, _, unmappable) = encoding_rs::SHIFT_JIS.encode(text);
        assert!(!unmappable);
        let mut bom = BOM.to_vec();
        bom.extend_from_slice(text.as_bytes());
        for (bytes, expected) in [
            (text.as_bytes().to_vec(), SourceEncoding::Utf8),
            (bom, SourceEncoding::Utf8Bom),
            (cp932.into_owned(), SourceEncoding::Cp932),
        ] {
            assert_eq!(decode(&bytes).unwrap(), (text.to_string(), expected));
        }
    }

    #[test]
    fn undecodable_and_binary_files_are_refused_whole() {
        // 0xFF is no byte of CP932, and not UTF-8.
        assert!(matches!(
            decode(b"user_id\n\xFF\xFF"),
            Err(FileError::Encoding { .. })
        ));
        // An age file's ciphertext: binary.
        assert!(matches!(
            decode(b"age-encryption.org/v1\n-> X25519 abc\n\x00\x01"),
            Err(FileError::Binary { offset: 36 })
        ));
        // A BOM followed by bytes that are not UTF-8.
        assert!(matches!(
            decode(b"\xEF\xBB\xBFa\x82\xA0"),
            Err(FileError::Encoding { offset: 4 })
        ));
    }
}
