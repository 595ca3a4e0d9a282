//! Redirect URI validation and matching: never a panic, and a match is always either the exact
//! string or a loopback URI that differs in port only.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera::oauth::client::{match_redirect_uri, validate_redirect_uri};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (registered, requested) = text.split_once('\n').unwrap_or((text, text));
    let _ = validate_redirect_uri(registered);
    let list = vec![registered.to_string(), "http://127.0.0.1/callback".to_string()];
    if let Some(matched) = match_redirect_uri(&list, requested) {
        assert!(
            matched == requested || matched.starts_with("http://127.0.0.1") || matched.starts_with("http://[::1]")
                || matched.starts_with("http://localhost"),
            "{requested:?} matched {matched:?}"
        );
    }
});
