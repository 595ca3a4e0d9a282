//! Token-request form parsing: any bytes either parse into pairs or are refused; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = tessera::urlencoded::parse_pairs(data) {
        let _ = tessera::urlencoded::repeated_name(&pairs);
        let _ = tessera::oauth::authorize::Params::new(&pairs).get("grant_type");
    }
});
