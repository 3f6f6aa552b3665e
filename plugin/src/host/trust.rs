//! Files the agent takes orders from (its config, the capture policy, the detection rules)
//! must not be writable by other users: the agent runs as root, and such a file would let any
//! local user turn capture off or silence the rules. Refused like a file that cannot be read.

use std::{os::unix::fs::PermissionsExt as _, path::Path};

/// An error when `path` (after symlinks, as a ConfigMap's files are) is writable by users
/// other than its owner and group.
pub fn refuse_if_writable_by_others(path: &Path) -> std::io::Result<()> {
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "writable by every user (mode {:04o}): refusing it (chmod o-w {})",
                mode & 0o7777,
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Reads a file the agent takes orders from; see `refuse_if_writable_by_others`.
pub fn read_trusted(path: &Path) -> std::io::Result<String> {
    refuse_if_writable_by_others(path)?;
    std::fs::read_to_string(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_writable_file_is_refused_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "default: all\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_trusted(&path).unwrap(), "default: all\n");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = read_trusted(&path).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            e.to_string(),
            format!(
                "writable by every user (mode 0666): refusing it (chmod o-w {})",
                path.display()
            )
        );
    }
}
