//! Scope parsing: parsed scopes print back to a string that parses to the same scope.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera::oauth::scope::Scope;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(scope) = Scope::parse(text) {
        let again = Scope::parse(&scope.to_string()).expect("a printed scope parses");
        assert_eq!(scope, again);
    }
});
