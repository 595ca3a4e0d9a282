//! Checks on text that people read: names shown on the consent page, paths put in a
//! `Location`. Characters that are invisible or reorder what is shown (bidirectional controls
//! such as U+202E) let one string pass for another, so they are refused wherever such text is
//! taken in.

/// Whether `c` is a control character, or an invisible formatting character: zero-width
/// spaces and joiners, bidirectional marks, embeddings, overrides and isolates, the word
/// joiner family, and the byte-order mark.
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}' | '\u{061c}' | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}')
}

/// Whether `text` has any [`is_deceptive`] character.
pub fn has_deceptive(text: &str) -> bool {
    text.chars().any(is_deceptive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidirectional_and_invisible_characters_are_deceptive() {
        for bad in ["pay\u{202e}lapyap", "a\u{200b}b", "\u{feff}x", "tab\there", "\u{2066}x"] {
            assert!(has_deceptive(bad), "{bad:?}");
        }
        assert!(!has_deceptive("Ünïcødé app – 日本語"));
    }
}
