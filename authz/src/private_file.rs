//! Files only their owner may read (keys, buyer secrets, cached tokens), replaced atomically.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Writes `bytes` to `path` with mode 0600 through a fresh temporary file beside it (never an
/// existing file or a link someone left there), synced, then renamed into place.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_private_file_replaces_the_old_one_with_mode_0600_even_over_a_stray_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret");
        super::write(&path, b"one").unwrap();
        std::fs::write(dir.path().join("sub/secret.tmp"), b"stray").unwrap();
        super::write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("sub/secret.tmp").exists());
    }
}
