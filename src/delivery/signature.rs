//! Standard Webhooks signatures: HMAC-SHA256 over `id.timestamp.body`, sent as
//! `webhook-signature: v1,<base64>` beside `webhook-id` and `webhook-timestamp`.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::hub::Secret;

/// The `webhook-signature` value for one attempt.
pub fn sign(secret: &Secret, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.key());
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
}

/// How far a `webhook-timestamp` may be from now, either way, before a receiver refuses
/// it as a replay: the Standard Webhooks libraries' tolerance.
pub const TIMESTAMP_TOLERANCE_SECS: u64 = 5 * 60;

/// Why a receiver must refuse a delivery's signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("webhook-timestamp {0:?} is not a number of seconds")]
    BadTimestamp(String),
    #[error(
        "webhook-timestamp is {0} s from now, more than the {TIMESTAMP_TOLERANCE_SECS} s allowed"
    )]
    Stale(u64),
    #[error("no v1 signature in webhook-signature matches this secret (signed with another?)")]
    Mismatch,
}

/// Checks a delivery as a receiver holding `secret` would: the three headers present, the
/// timestamp within [`TIMESTAMP_TOLERANCE_SECS`] of `now` (seconds since the epoch), and
/// one of the space-separated `v1,` signatures made with the secret (compared in constant
/// time).
pub fn verify(
    secret: &Secret,
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<(), Unverified> {
    let id = id.ok_or(Unverified::Missing("webhook-id"))?;
    let timestamp = timestamp.ok_or(Unverified::Missing("webhook-timestamp"))?;
    let signatures = signatures.ok_or(Unverified::Missing("webhook-signature"))?;
    let seconds: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Unverified::BadTimestamp(timestamp.chars().take(40).collect()))?;
    let skew = now.abs_diff(seconds);
    if skew > TIMESTAMP_TOLERANCE_SECS {
        return Err(Unverified::Stale(skew));
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.key());
    let message = [
        id.as_bytes(),
        b".",
        seconds.to_string().as_bytes(),
        b".",
        body,
    ]
    .concat();
    let matches = signatures
        .split(' ')
        .filter_map(|signature| signature.strip_prefix("v1,"))
        .filter_map(|tag| STANDARD.decode(tag).ok())
        .any(|tag| hmac::verify(&key, &message, &tag).is_ok());
    if matches {
        Ok(())
    } else {
        Err(Unverified::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_what_it_signs_and_nothing_else() {
        let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let other: Secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".parse().unwrap();
        let now = 1_700_000_000;
        let signature = sign(&secret, "msg_1", now, b"body");
        let check = |secret: &Secret, ts: u64, signatures: &str, body: &[u8]| {
            let ts = ts.to_string();
            verify(
                secret,
                Some("msg_1"),
                Some(&ts),
                Some(signatures),
                body,
                now,
            )
        };
        assert_eq!(check(&secret, now, &signature, b"body"), Ok(()));
        let several = format!("v1,AAAA {signature}");
        assert_eq!(
            check(&secret, now - 10, &several, b"body"),
            Err(Unverified::Mismatch)
        );
        assert_eq!(check(&secret, now, &several, b"body"), Ok(()));
        assert_eq!(
            check(&other, now, &signature, b"body"),
            Err(Unverified::Mismatch)
        );
        assert_eq!(
            check(&secret, now, &signature, b"bodY"),
            Err(Unverified::Mismatch)
        );
        assert_eq!(
            check(&secret, now - 301, &signature, b"body"),
            Err(Unverified::Stale(301))
        );
        assert_eq!(
            verify(&secret, None, Some("1"), Some(&signature), b"body", now),
            Err(Unverified::Missing("webhook-id"))
        );
    }

    // The published vectors of the Standard Webhooks reference libraries.
    #[test]
    fn reproduces_the_published_vectors() {
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".parse().unwrap();
        assert_eq!(
            sign(
                &secret,
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        assert_eq!(
            sign(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn any_change_changes_the_signature() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let base = sign(&secret, "msg_1", 1, b"body");
        assert_ne!(base, sign(&secret, "msg_2", 1, b"body"));
        assert_ne!(base, sign(&secret, "msg_1", 2, b"body"));
        assert_ne!(base, sign(&secret, "msg_1", 1, b"bodY"));
    }
}
