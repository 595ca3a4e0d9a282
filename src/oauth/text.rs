//! Checks on text that people read: names shown on the consent page, paths put in a
//! `Location`. Characters that are invisible or reorder what is shown (bidirectional controls
//! such as U+202E) let one string pass for another, so they are refused wherever such text is
//! taken in.

/// Whether `c` is a control character, or one that shows as nothing or reorders what is
/// shown: every Unicode default-ignorable code point (zero-width spaces and joiners,
/// bidirectional marks, embeddings, overrides and isolates, variation selectors, Hangul
/// fillers, tag characters, the byte-order mark, ...), the line and paragraph separators,
/// interlinear annotation marks, and the blank braille pattern.
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c,
            // Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt).
            '\u{00ad}' | '\u{034f}' | '\u{061c}'
            | '\u{115f}'..='\u{1160}'
            | '\u{17b4}'..='\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fff8}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'
            // Blank or invisible in practice, though not default-ignorable.
            | '\u{2028}'..='\u{2029}'
            | '\u{2800}'
            | '\u{fff9}'..='\u{fffb}')
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
        for bad in [
            "pay\u{202e}lapyap",
            "a\u{200b}b",
            "\u{feff}x",
            "tab\there",
            "\u{2066}x",
            "\u{3164}",
            "\u{ffa0}",
            "\u{115f}x",
            "\u{2800}",
            "a\u{e0041}",
            "a\u{fe0f}",
            "a\u{180b}",
            "\u{206a}",
            "\u{fff9}",
            "\u{1bca0}",
            "\u{1d173}",
            "a\u{034f}b",
            "\u{17b4}",
            "a\u{2028}b",
        ] {
            assert!(has_deceptive(bad), "{bad:?}");
        }
        assert!(!has_deceptive("Ünïcødé app – 日本語"));
    }
}
