//! Writing the spool file so that a reader sees all of it or nothing
//! (SPOOL-2).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `content` to `path + ".tmp"` (mode 0600), flushes it to disk and
/// renames it to `path`; then syncs the directory, so the rename is durable.
pub(crate) fn write_atomic(path: &str, content: &[u8]) -> io::Result<()> {
    let tmp = format!("{path}.tmp");
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn spool_2_the_file_is_whole_private_and_leaves_no_tmp() {
        let dir = std::env::temp_dir().join(format!("extjob-spool-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("j.ndjson");
        let path = path.to_str().unwrap();
        write_atomic(path, b"{\"a\":1}\n").unwrap();
        assert_eq!(fs::read(path).unwrap(), b"{\"a\":1}\n");
        assert_eq!(
            fs::metadata(path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!Path::new(&format!("{path}.tmp")).exists());
        assert!(write_atomic(dir.join("missing/x").to_str().unwrap(), b"x").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
