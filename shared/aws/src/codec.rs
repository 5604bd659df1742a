//! How documents are kept in DynamoDB items: compact JSON, deflated (DynamoDB bills writes
//! per started KiB, and run records compress several times), and spilled to S3 when even
//! the deflated bytes would not fit in an item (400 KB) — SPEC §7's 10 MB outputs.

use std::io::{Read, Write};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_core::ports::StoreError;

use crate::error::{backend, json_error};

/// Deflated documents larger than this go to S3; the rest of an item (keys, a few
/// attributes) stays far below DynamoDB's 400 KB.
pub const INLINE_LIMIT: usize = 300 * 1024;

/// Documents up to this size get the best compression, larger ones the fastest.
const BEST_COMPRESSION_UP_TO: usize = 64 * 1024;

/// Attribute holding an inline deflated document.
pub const DOC: &str = "doc";
/// Attribute holding the S3 key of a spilled document.
pub const DOC_S3: &str = "doc_s3";

pub fn deflate(bytes: &[u8]) -> Vec<u8> {
    // Run records are rewritten by every transition and billed per started KiB: the
    // best compression pays for its microseconds there. Large outputs are written once.
    let level = if bytes.len() <= BEST_COMPRESSION_UP_TO {
        Compression::best()
    } else {
        Compression::fast()
    };
    let mut encoder = DeflateEncoder::new(Vec::with_capacity(bytes.len() / 3 + 16), level);
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

pub fn inflate(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(bytes.len() * 4);
    DeflateDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| backend(format!("corrupt deflated document: {e}")))?;
    Ok(out)
}

/// Where a document ended up.
pub enum Encoded {
    /// Deflated bytes for the `doc` attribute.
    Inline(Vec<u8>),
    /// Too large: these deflated bytes must be written to S3.
    Spill(Vec<u8>),
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Encoded, StoreError> {
    let json = serde_json::to_vec(value).map_err(json_error)?;
    let deflated = deflate(&json);
    Ok(if deflated.len() > INLINE_LIMIT {
        Encoded::Spill(deflated)
    } else {
        Encoded::Inline(deflated)
    })
}

pub fn decode<T: DeserializeOwned>(deflated: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(&inflate(deflated)?).map_err(json_error)
}

pub fn blob(bytes: Vec<u8>) -> AttributeValue {
    AttributeValue::B(Blob::new(bytes))
}
