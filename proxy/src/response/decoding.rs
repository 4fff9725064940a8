//! Undoing a `Content-Encoding` the upstream applied although the proxy
//! asked for `identity`, so the body can still be metered (and its usage
//! filtered): gzip, deflate (zlib) and brotli, chunk by chunk. The client
//! then gets the decoded body, which is what a compliant upstream sends.

use std::io::Write;

/// A streaming decoder for one response body.
pub enum ContentDecoder {
    Gzip(Box<flate2::write::GzDecoder<Vec<u8>>>),
    Deflate(Box<flate2::write::ZlibDecoder<Vec<u8>>>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

impl std::fmt::Debug for ContentDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ContentDecoder::Gzip(_) => "ContentDecoder::Gzip",
            ContentDecoder::Deflate(_) => "ContentDecoder::Deflate",
            ContentDecoder::Brotli(_) => "ContentDecoder::Brotli",
        })
    }
}

/// What a `Content-Encoding` means for metering.
#[derive(Debug)]
pub enum Encoding {
    /// Nothing to undo.
    Identity,
    Decodable(ContentDecoder),
    /// A coding (or a chain of codings) this proxy cannot undo.
    Unsupported,
}

impl Encoding {
    pub fn of(content_encoding: Option<&[u8]>) -> Encoding {
        let Some(value) = content_encoding.map(<[u8]>::trim_ascii).filter(|v| !v.is_empty()) else {
            return Encoding::Identity;
        };
        let value = value.to_ascii_lowercase();
        match value.as_slice() {
            b"identity" => Encoding::Identity,
            b"gzip" | b"x-gzip" => Encoding::Decodable(ContentDecoder::Gzip(Box::new(flate2::write::GzDecoder::new(
                Vec::new(),
            )))),
            b"deflate" => Encoding::Decodable(ContentDecoder::Deflate(Box::new(flate2::write::ZlibDecoder::new(
                Vec::new(),
            )))),
            b"br" => Encoding::Decodable(ContentDecoder::Brotli(Box::new(brotli::DecompressorWriter::new(
                Vec::new(),
                4096,
            )))),
            _ => Encoding::Unsupported,
        }
    }
}

impl ContentDecoder {
    /// Decodes `chunk` and returns what it yields (possibly nothing yet);
    /// `end` flushes the rest. `Err` on a corrupt body.
    pub fn decode(&mut self, chunk: &[u8], end: bool) -> Result<Vec<u8>, String> {
        let corrupt = |e: std::io::Error| format!("the upstream's compressed body is corrupt: {e}");
        match self {
            ContentDecoder::Gzip(decoder) => {
                decoder.write_all(chunk).map_err(corrupt)?;
                if end {
                    decoder.try_finish().map_err(corrupt)?;
                }
                Ok(std::mem::take(decoder.get_mut()))
            }
            ContentDecoder::Deflate(decoder) => {
                decoder.write_all(chunk).map_err(corrupt)?;
                if end {
                    decoder.try_finish().map_err(corrupt)?;
                }
                Ok(std::mem::take(decoder.get_mut()))
            }
            ContentDecoder::Brotli(decoder) => {
                decoder.write_all(chunk).map_err(corrupt)?;
                if end {
                    decoder.flush().map_err(corrupt)?;
                }
                Ok(std::mem::take(decoder.get_mut()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(encoding: &str, data: &[u8]) -> Vec<u8> {
        match encoding {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "deflate" => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            _ => {
                let mut out = Vec::new();
                {
                    let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    e.write_all(data).unwrap();
                }
                out
            }
        }
    }

    #[test]
    fn decodes_every_supported_coding_in_any_chunking() {
        let data = "data: {\"usage\":{\"prompt_tokens\":3}}\n\n".repeat(50);
        for encoding in ["gzip", "deflate", "br"] {
            let compressed = compress(encoding, data.as_bytes());
            for size in [1, 7, 64, compressed.len()] {
                let Encoding::Decodable(mut decoder) = Encoding::of(Some(encoding.as_bytes())) else {
                    panic!("{encoding} is decodable")
                };
                let mut decoded = Vec::new();
                let pieces: Vec<&[u8]> = compressed.chunks(size).collect();
                for (i, piece) in pieces.iter().enumerate() {
                    decoded.extend(decoder.decode(piece, i + 1 == pieces.len()).unwrap());
                }
                assert_eq!(decoded, data.as_bytes(), "{encoding} in pieces of {size}");
            }
        }
    }

    #[test]
    fn recognises_codings_and_rejects_corrupt_bodies() {
        assert!(matches!(Encoding::of(None), Encoding::Identity));
        assert!(matches!(Encoding::of(Some(b" Identity ")), Encoding::Identity));
        assert!(matches!(Encoding::of(Some(b"GZIP")), Encoding::Decodable(_)));
        assert!(matches!(Encoding::of(Some(b"zstd")), Encoding::Unsupported));
        assert!(matches!(Encoding::of(Some(b"gzip, br")), Encoding::Unsupported));
        let Encoding::Decodable(mut decoder) = Encoding::of(Some(b"gzip")) else {
            unreachable!()
        };
        assert!(decoder.decode(b"not gzip at all", true).is_err());
    }
}
