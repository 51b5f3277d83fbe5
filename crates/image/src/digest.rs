//! sha256 digests: parsing, computing, and verifying while a blob streams.

use crate::error::{ImageError, Result};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

/// A `sha256:<64 hex>` digest (the only algorithm registries use in practice).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex(&Sha256::digest(bytes)),
        }
    }
    pub fn hex(&self) -> &str {
        &self.hex
    }
    /// The first 12 hex digits, as `docker images` shows ids.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Digest> {
        let bad = |reason: &str| ImageError::Invalid {
            what: format!("digest {s:?}"),
            reason: reason.into(),
        };
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected sha256:<hex>"))?;
        if algo != "sha256" {
            return Err(ImageError::Unsupported {
                what: "digest algorithm".into(),
                value: algo.into(),
            });
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("expected 64 lowercase hex digits"));
        }
        Ok(Digest { hex: hex.into() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes everything read through it; [`HashingReader::finish`] checks the
/// digest (and size) once the stream is consumed.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn bytes_read(&self) -> u64 {
        self.count
    }

    /// Reads what is left (a tar stream may end before its padding), then
    /// compares with `expected`.
    pub fn finish(mut self, what: &str, expected: &Digest, size: Option<u64>) -> Result<()> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| ImageError::io(what, e))?;
        if let Some(size) = size {
            if size != self.count {
                return Err(ImageError::SizeMismatch {
                    what: what.into(),
                    expected: size,
                    actual: self.count,
                });
            }
        }
        let actual = Digest {
            hex: hex(&self.hasher.finalize()),
        };
        if &actual != expected {
            return Err(ImageError::DigestMismatch {
                what: what.into(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// The digest of everything read so far.
    pub fn digest(self) -> (Digest, u64) {
        (
            Digest {
                hex: hex(&self.hasher.finalize()),
            },
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_verify() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("sha256:xyz".parse::<Digest>().is_err());
        assert!("md5:abc".parse::<Digest>().is_err());
        assert!("nocolon".parse::<Digest>().is_err());
        let r = HashingReader::new(&b"hello"[..]);
        r.finish("blob", &d, Some(5)).unwrap();
        let r = HashingReader::new(&b"hellO"[..]);
        assert!(matches!(
            r.finish("blob", &d, None),
            Err(ImageError::DigestMismatch { .. })
        ));
        let r = HashingReader::new(&b"hell"[..]);
        assert!(matches!(
            r.finish("blob", &d, Some(5)),
            Err(ImageError::SizeMismatch { .. })
        ));
    }
}
