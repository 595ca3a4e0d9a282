//! JWT verification input: arbitrary strings presented as access or ID tokens are refused
//! (they cannot carry a valid signature), never a panic.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tessera::keys::{FolderVault, KeySet, Keys};

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<(tempdir::Dir, Arc<KeySet>)> = OnceLock::new();
    &KEYS
        .get_or_init(|| {
            let dir = tempdir::Dir::new();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let keys = runtime.block_on(Keys::load(Arc::new(FolderVault::new(&dir.0)))).unwrap();
            (dir, keys.current())
        })
        .1
}

mod tempdir {
    /// A keyring folder for the run, removed at exit.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!("tessera-fuzz-keys-{}", std::process::id()));
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let keys = keys();
        assert!(keys.verify_jwt(token, "at+jwt", "https://issuer").is_none());
        assert!(keys.verify_jwt_ignoring_expiry(token, "JWT", "https://issuer").is_none());
    }
});
