//! Query-string parsing that fails exactly where Go's `url.ParseQuery` fails, with the
//! same messages, so the seed routes answer malformed queries the way the seed did.

/// Decoded `key=value` pairs in order, or Go's error for the first malformed part.
pub(super) fn parse_query(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut error = None;
    for part in raw.split('&') {
        if part.contains(';') {
            // Go overwrites an earlier error with this one; keep that quirk.
            error = Some("invalid semicolon separator in query".to_owned());
            continue;
        }
        if part.is_empty() {
            continue;
        }
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        match (unescape(key), unescape(value)) {
            (Ok(key), Ok(value)) => pairs.push((key, value)),
            (Err(err), _) | (_, Err(err)) => {
                error.get_or_insert(err);
            }
        }
    }
    match error {
        Some(error) => Err(error),
        None => Ok(pairs),
    }
}

/// The first value of `name`, as Go's `url.Values.Get` returns it ("" when absent).
pub(super) fn first<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map_or("", |(_, value)| value)
}

fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: u8| char::from(b).to_digit(16);
                match (
                    bytes.get(i + 1).and_then(|&b| hex(b)),
                    bytes.get(i + 2).and_then(|&b| hex(b)),
                ) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 3;
                    }
                    _ => {
                        let end = (i + 3).min(bytes.len());
                        let bad = String::from_utf8_lossy(&bytes[i..end]);
                        return Err(format!("invalid URL escape {bad:?}"));
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_go() {
        let pairs = parse_query("address=localhost%3A8080&x=a+b&&address=second&flag").unwrap();
        assert_eq!(first(&pairs, "address"), "localhost:8080");
        assert_eq!(first(&pairs, "x"), "a b");
        assert_eq!(first(&pairs, "flag"), "");
        assert_eq!(first(&pairs, "missing"), "");
    }

    #[test]
    fn fails_like_go() {
        assert_eq!(
            parse_query("address=%zz"),
            Err(r#"invalid URL escape "%zz""#.into())
        );
        assert_eq!(
            parse_query("address=ab%4"),
            Err(r#"invalid URL escape "%4""#.into())
        );
        assert_eq!(
            parse_query("a=1;b=2"),
            Err("invalid semicolon separator in query".into())
        );
    }
}
