//! Files and folders only the server's own user may read: the data folder and the keyring.

use std::fs;
use std::path::Path;

/// Creates `dir` (and parents) and restricts it to the owner.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
