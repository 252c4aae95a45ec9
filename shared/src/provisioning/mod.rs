//! Bulk provisioning from the HR file (seed 000 Appendix 2): the CSV's bytes in, typed user records and
//! per-row rejections out. Every cell is client input from a spreadsheet, so each step states its
//! invariant and enforces it here, in one place:
//!
//! 1. [`encoding::decode`]: the bytes are UTF-8 (with or without a BOM) or CP932 as Excel in Japan
//!    saves it, decoded without loss or replacement characters; anything else refuses the whole file.
//! 2. [`csv::records`]: RFC 4180 records (quoted fields, `""` escapes, CRLF or LF, line breaks inside
//!    quotes); an unterminated quote refuses the whole file. Each record keeps the number a spreadsheet
//!    shows for its row (header = 1).
//! 3. [`rows::parse`]: the header must be exactly the Appendix 2 columns; each row is checked against
//!    the rules of DESIGN §8 into a [`UserRecord`] or rejected with its row number and every reason.
//!    No cell that a spreadsheet would run as a formula gets through, in either direction
//!    ([`export::cell`] neutralises them on the way out).

pub mod csv;
pub mod encoding;
pub mod export;
pub mod plan;
pub mod rows;

pub use encoding::{decode, SourceEncoding};
pub use rows::{parse, ParsedFile, Rejection, Status, UserRecord};

/// Why a whole file is refused: nothing in it is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("the file is empty")]
    Empty,
    #[error(
        "the file is neither UTF-8 nor Shift_JIS/CP932 text (byte {offset} cannot be decoded)"
    )]
    Encoding { offset: usize },
    #[error("the file contains a NUL byte at {offset}: not a CSV text file")]
    Binary { offset: usize },
    #[error("row {line}: a quoted field is not closed before the end of the file")]
    UnterminatedQuote { line: usize },
    #[error("row {line}: a quote inside an unquoted field")]
    StrayQuote { line: usize },
    #[error("the header must be `{expected}`, found `{found}`")]
    Header { expected: String, found: String },
    #[error("the file has more than {max} rows")]
    TooManyRows { max: usize },
    #[error("the file is larger than {max} bytes")]
    TooLarge { max: usize },
}
