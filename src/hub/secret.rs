//! Signing secrets in the Standard Webhooks form: `whsec_` followed by base64 key bytes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecretError {
    #[error(
        "a signing secret starts with whsec_ followed by base64, e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )]
    Prefix,
    #[error("the part of the signing secret after whsec_ is not valid base64 ({0})")]
    Base64(String),
    #[error("a signing secret must hold between 24 and 64 bytes of key, this one holds {0}")]
    Length(usize),
}

/// The key bytes of a signing secret. Shown redacted, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    pub fn key(&self) -> &[u8] {
        &self.0
    }

    /// The secret as it is written (`whsec_` and base64), for a store to keep.
    pub fn expose(&self) -> String {
        format!("whsec_{}", STANDARD.encode(&self.0))
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<Self, SecretError> {
        let encoded = text.strip_prefix("whsec_").ok_or(SecretError::Prefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|err| SecretError::Base64(err.to_string()))?;
        // The spec asks for 24 to 64 bytes; a shorter key would be easy to guess.
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Self(key.into()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        assert_eq!(secret.key().len(), 24);
        assert_eq!(format!("{secret:?}"), "Secret(whsec_…)");
        assert_eq!("MfKQ9r8GKYqr".parse::<Secret>(), Err(SecretError::Prefix));
        assert!(matches!(
            "whsec_!!!".parse::<Secret>(),
            Err(SecretError::Base64(_))
        ));
        assert_eq!(
            "whsec_c2hvcnQ=".parse::<Secret>(),
            Err(SecretError::Length(5))
        );
    }
}
