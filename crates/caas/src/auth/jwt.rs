//! HS256 JSON Web Tokens, written over ring::hmac (jsonwebtoken's releases
//! need aws-lc or RustCrypto). Only `{"alg":"HS256","typ":"JWT"}` is
//! accepted: `none`, RS256 and any other header are refused before the
//! signature is even looked at (no algorithm confusion).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Login id (checked against the database on every request).
    pub sid: String,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
}

pub struct Signer {
    key: hmac::Key,
    /// Tokens whose header and signature checked out, with their claims:
    /// the proxy sees the same token on every request of a browser (a
    /// verification is two base64 decodes, two JSON parses and an HMAC; a
    /// hit is one hash of the token). Only the exact bytes of a verified
    /// token hit; expiry is checked on every use; revocation is the
    /// caller's (the login check), as without the cache.
    verified: Mutex<HashMap<Box<str>, Claims>>,
}

/// Verified tokens remembered per signer; when full, the expired ones are
/// dropped, and if none had expired, all of them.
const VERIFIED_MAX: usize = 10_000;

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            verified: Mutex::default(),
        }
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let input = format!("{header}.{payload}");
        let sig = hmac::sign(&self.key, input.as_bytes());
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }

    /// Verifies header, signature and expiry (`now` in seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims> {
        let known = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        let claims = match known {
            Some(c) => c,
            None => {
                let c = self.verify_signed(token)?;
                let mut m = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                if m.len() >= VERIFIED_MAX {
                    m.retain(|_, c| c.exp > now);
                    if m.len() >= VERIFIED_MAX {
                        m.clear();
                    }
                }
                m.insert(token.into(), c.clone());
                c
            }
        };
        if claims.exp <= now {
            return Err(Error::Unauthenticated(
                "access token expired: refresh it or sign in again".into(),
            ));
        }
        Ok(claims)
    }

    /// The claims of a token whose header and signature are right (expiry
    /// not checked).
    fn verify_signed(&self, token: &str) -> Result<Claims> {
        let bad = |why: &str| {
            Error::Unauthenticated(format!("invalid access token ({why}): sign in again"))
        };
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not a JWT"));
        };
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("header"))?;
        if header.alg != "HS256" || header.typ != "JWT" {
            return Err(bad("algorithm"));
        }
        let sig = B64.decode(s).map_err(|_| bad("signature encoding"))?;
        hmac::verify(&self.key, format!("{h}.{p}").as_bytes(), &sig)
            .map_err(|_| bad("signature"))?;
        let claims: Claims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("claims"))?;
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "u1".into(),
            sid: "l1".into(),
            role: "student".into(),
            iat: 100,
            exp,
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let s = Signer::new(b"k1");
        let t = s.sign(&claims(200));
        assert_eq!(s.verify(&t, 150).unwrap(), claims(200));
        assert_eq!(s.verified.lock().unwrap().len(), 1);
        assert!(s
            .verify(&t, 200)
            .unwrap_err()
            .to_string()
            .contains("expired"));
        // Another key: refused.
        assert!(Signer::new(b"k2").verify(&t, 150).is_err());
    }

    /// (That a remembered token still expires: [`round_trip_and_expiry`],
    /// whose first verification remembers it.)
    #[test]
    fn forgeries_never_hit_remembered_tokens() {
        let s = Signer::new(b"k1");
        let t = s.sign(&claims(200));
        assert_eq!(s.verify(&t, 150).unwrap(), claims(200));
        // The same claims signed with another key, after the real token
        // was remembered: still refused.
        let other = Signer::new(b"k2").sign(&claims(200));
        assert!(s.verify(&other, 150).is_err());
        assert!(s.verify(&format!("{t}x"), 150).is_err());
        // A full cache starts over without losing correctness.
        for i in 0..VERIFIED_MAX + 1 {
            let mut c = claims(200);
            c.sub = format!("u{i}");
            assert!(s.verify(&s.sign(&c), 150).is_ok());
        }
        assert!(s.verified.lock().unwrap().len() <= VERIFIED_MAX);
        assert_eq!(s.verify(&t, 150).unwrap(), claims(200));
    }

    #[test]
    fn tampering_is_refused() {
        let s = Signer::new(b"k1");
        let t = s.sign(&claims(200));
        let parts: Vec<&str> = t.split('.').collect();
        // Claims changed (role escalated), signature kept.
        let mut c = claims(200);
        c.role = "admin".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(serde_json::to_vec(&c).unwrap()),
            parts[2]
        );
        assert!(s
            .verify(&forged, 150)
            .unwrap_err()
            .to_string()
            .contains("signature"));
        // Flipped signature byte, truncated, extra part.
        let mut sig = B64.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        assert!(s
            .verify(
                &format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig)),
                150
            )
            .is_err());
        assert!(s
            .verify(&format!("{}.{}", parts[0], parts[1]), 150)
            .is_err());
        assert!(s.verify(&format!("{t}.x"), 150).is_err());
        assert!(s.verify("", 150).is_err());
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        let s = Signer::new(b"k1");
        let payload = B64.encode(serde_json::to_vec(&claims(200)).unwrap());
        // alg none with an empty signature.
        let none = format!(
            "{}.{payload}.",
            B64.encode(br#"{"alg":"none","typ":"JWT"}"#)
        );
        assert!(s
            .verify(&none, 150)
            .unwrap_err()
            .to_string()
            .contains("algorithm"));
        // HS512 / RS256 header signed with the HMAC key anyway.
        for alg in ["HS512", "RS256", "hs256"] {
            let h = B64.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let input = format!("{h}.{payload}");
            let sig = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"k1"), input.as_bytes());
            let t = format!("{input}.{}", B64.encode(sig.as_ref()));
            assert!(
                s.verify(&t, 150)
                    .unwrap_err()
                    .to_string()
                    .contains("algorithm"),
                "{alg}"
            );
        }
    }
}
