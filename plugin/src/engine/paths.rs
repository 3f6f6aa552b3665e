//! Path resolution the way the collector does it: a relative path is joined to the directory
//! it is relative to (the cwd or a dirfd) when that is known, then `.` and `..` are folded
//! lexically. When the base is unknown the path stays as given.

/// Joins `path` to `base` (when relative) and folds `.`/`..` components.
pub fn resolve(base: Option<&str>, path: &str) -> String {
    if path.is_empty() {
        return base.map(normalize).unwrap_or_default();
    }
    if path.starts_with('/') {
        return normalize(path);
    }
    match base {
        Some(base) if base.starts_with('/') => normalize(&format!("{base}/{path}")),
        _ => path.to_owned(),
    }
}

/// Folds `.`, `..` and repeated slashes of an absolute path.
pub fn normalize(path: &str) -> String {
    // Most paths are already normal: one copy, no splitting.
    if path.len() > 1
        && path.starts_with('/')
        && path[1..].split('/').all(|p| !matches!(p, "" | "." | ".."))
    {
        return path.to_owned();
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_the_collector() {
        assert_eq!(
            resolve(Some("/srv/app"), "data/x.log"),
            "/srv/app/data/x.log"
        );
        assert_eq!(
            resolve(Some("/srv/app"), "../tested_file2.txt"),
            "/srv/tested_file2.txt"
        );
        assert_eq!(resolve(Some("/srv"), "/etc//passwd"), "/etc/passwd");
        assert_eq!(resolve(None, "./testing_dir"), "./testing_dir");
        assert_eq!(resolve(Some("/"), ".."), "/");
        assert_eq!(resolve(Some("/tmp/d"), ""), "/tmp/d");
        // The fast path leaves normal paths alone and sends the rest to folding.
        assert_eq!(normalize("/etc/hosts"), "/etc/hosts");
        assert_eq!(normalize("/etc/"), "/etc");
        assert_eq!(normalize("/a/./b/../c"), "/a/c");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("/..."), "/...");
    }
}
