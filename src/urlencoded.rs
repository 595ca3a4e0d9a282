//! `application/x-www-form-urlencoded` data (a body or a query string), parsed strictly.

use percent_encoding::percent_decode;

/// Parses `application/x-www-form-urlencoded` data (a body or a query string) strictly:
/// every name and value must decode to UTF-8 without a NUL character (no text Tessera keeps
/// may hold one, and PostgreSQL cannot store one). Order is kept; duplicates are reported by
/// callers that care.
pub fn parse_pairs(data: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    data.split(|&b| b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &b""[..]),
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// Decodes one form-encoded component strictly (`+` is a space, escapes must form UTF-8).
fn decode(raw: &[u8]) -> Result<String, &'static str> {
    const NOT_UTF8: &str = "the request is not valid UTF-8";
    let text = if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        // The common case: nothing to unescape.
        std::str::from_utf8(raw).map(str::to_string).map_err(|_| NOT_UTF8)?
    } else {
        let plus_as_space: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
        percent_decode(&plus_as_space)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| NOT_UTF8)?
    };
    if text.contains('\0') {
        return Err(NUL);
    }
    Ok(text)
}

/// Why text with a NUL character is refused.
pub const NUL: &str = "the request may not contain a NUL character";

/// Whether a URL path holds a NUL character once percent-decoded.
pub(crate) fn path_has_nul(path: &str) -> bool {
    percent_decode(path.as_bytes()).any(|b| b == 0)
}

/// Whether JSON text holds a NUL character: a raw one, or a `\u0000` escape inside a string
/// (an escaped backslash followed by `u0000` is not one).
pub(crate) fn json_has_nul(text: &[u8]) -> bool {
    let (mut in_string, mut at) = (false, 0);
    while at < text.len() {
        match text[at] {
            0 => return true,
            b'"' => in_string = !in_string,
            b'\\' if in_string => {
                if text.get(at + 1) == Some(&b'u') && text.get(at + 2..at + 6) == Some(b"0000") {
                    return true;
                }
                // The escaped character is skipped, whatever it is.
                at += 1;
            }
            _ => {}
        }
        at += 1;
    }
    false
}

/// The first parameter name that occurs more than once.
pub fn repeated_name(pairs: &[(String, String)]) -> Option<&str> {
    pairs
        .iter()
        .enumerate()
        .find(|(i, (name, _))| pairs[..*i].iter().any(|(n, _)| n == name))
        .map(|(_, (name, _))| name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_percent_and_plus_decoded() {
        let pairs = parse_pairs(b"a=1+2&b=%C3%A9&c").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "1 2".into()),
                ("b".into(), "é".into()),
                ("c".into(), "".into())
            ]
        );
    }

    #[test]
    fn non_utf8_is_rejected() {
        assert!(parse_pairs(b"a=%FF").is_err());
        assert!(parse_pairs(b"a=\xff").is_err());
    }

    #[test]
    fn nul_characters_are_refused_wherever_they_hide() {
        assert_eq!(parse_pairs(b"a=x%00y"), Err(NUL));
        assert_eq!(parse_pairs(b"a%00=y"), Err(NUL));
        assert_eq!(parse_pairs(b"a=x\0"), Err(NUL));
        assert!(path_has_nul("/api/v1/clients/a%00b"));
        assert!(!path_has_nul("/api/v1/clients/a%20b"));
        assert!(json_has_nul(br#"{"name": "a\u0000b"}"#));
        assert!(json_has_nul(b"{\"name\": \"a\0b\"}"));
        assert!(!json_has_nul(br#"{"name": "a\\u0000b"}"#), "an escaped backslash");
        assert!(json_has_nul(br#"{"name": "\u00000"}"#));
        assert!(!json_has_nul(br#"{"u0000": "\"", "n": 1}"#));
    }

    #[test]
    fn repeated_names_are_found() {
        let pairs = parse_pairs(b"a=1&b=2&a=3").unwrap();
        assert_eq!(repeated_name(&pairs), Some("a"));
        assert_eq!(repeated_name(&parse_pairs(b"a=1&b=2").unwrap()), None);
    }
}
