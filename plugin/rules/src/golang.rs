//! The small Go and sf-apis functions whose exact results sf-processor's attributes and JSON
//! carry: `path/filepath`'s Base, Dir and Clean, the flag name tables, symlink paths, enum
//! names, and JSON string escaping (easyjson's, and `encoding/json`'s for pod services).

use std::{borrow::Cow, fmt::Write as _};

use sysflow::Service;

/// `filepath.Base`: the last element; "." for an empty path, "/" for only slashes.
pub fn base(p: &str) -> Cow<'_, str> {
    if p.is_empty() {
        return Cow::Borrowed(".");
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return Cow::Borrowed("/");
    }
    Cow::Borrowed(trimmed.rsplit('/').next().unwrap_or(trimmed))
}

/// `filepath.Dir`: everything but the last element, cleaned.
pub fn dir(p: &str) -> String {
    let cut = p.rfind('/').map_or(0, |i| i + 1);
    clean(&p[..cut])
}

/// `filepath.Dir` without allocating, when the part before the last slash is already clean
/// (no empty, `.` or `..` element, no trailing slash): None otherwise.
pub fn dir_if_clean(p: &str) -> Option<&str> {
    let cut = p.rfind('/')?;
    let head = &p[..cut];
    if head.is_empty() {
        return Some("/");
    }
    let clean = !head.ends_with('/')
        && head
            .split('/')
            .skip(usize::from(head.starts_with('/')))
            .all(|e| !e.is_empty() && e != "." && e != "..");
    clean.then_some(head)
}

/// `filepath.Clean`, lexically.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// sf-processor's `parseSymPath`: a path written as `src->dst target` (a symlink the collector
/// resolved) splits into the target and `src->dst` (hex, as Go prints it); anything else is
/// the path itself and no link. Like Go's `Sscanf("%x->%x %s")`, the target ends at its first
/// space.
pub fn sym_path(orig: &str) -> (String, String) {
    fn hex(s: &str) -> Option<(u64, &str)> {
        let s = s.trim_start_matches([' ', '\t']);
        let n = s
            .bytes()
            .take_while(|b| b.is_ascii_hexdigit() || *b == b'_')
            .count();
        let v = u64::from_str_radix(&s[..n], 16).ok()?;
        Some((v, &s[n..]))
    }
    let parsed = (|| {
        let (src, rest) = hex(orig)?;
        let rest = rest.strip_prefix("->")?;
        let (dst, rest) = hex(rest)?;
        if !rest.starts_with([' ', '\t']) {
            return None;
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let target: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
        if target.is_empty() {
            return None;
        }
        Some((target, format!("{src:x}->{dst:x}")))
    })();
    parsed.unwrap_or_else(|| (orig.to_string(), String::new()))
}

/// Go's `string(rune(v))`: the character, or U+FFFD when `v` is not one.
/// `rune_string` of an ASCII value, without allocating (file types are ASCII letters).
pub fn ascii_rune(v: i64) -> Option<&'static str> {
    const BYTES: [u8; 128] = {
        let mut b = [0u8; 128];
        let mut i = 0;
        while i < 128 {
            b[i] = i as u8;
            i += 1;
        }
        b
    };
    let i = usize::try_from(v).ok().filter(|&i| i < 128)?;
    std::str::from_utf8(std::slice::from_ref(&BYTES[i])).ok()
}

pub fn rune_string(v: i64) -> String {
    u32::try_from(v)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{fffd}')
        .to_string()
}

pub fn is_open_write(flags: i64) -> bool {
    flags & 3 == 3 || flags & 2 == 2
}

pub fn is_open_read(flags: i64) -> bool {
    flags & 3 == 3 || flags & 1 == 1
}

/// sf-apis `GetOpFlags`' names in its order; bit 9 and 8 are SEND/RECV on network flows,
/// WRITE/READ otherwise.
pub fn op_flag_names(flags: i32, network: bool) -> Vec<&'static str> {
    op_flag_names_by_bit(network)
        .filter(|(bit, _)| flags & bit == *bit)
        .map(|(_, name)| name)
        .collect()
}

/// Every named operation flag bit, in `GetOpFlags`' order.
pub fn op_flag_names_by_bit(network: bool) -> impl Iterator<Item = (i32, &'static str)> {
    [
        (1 << 15, "MKDIR"),
        (1 << 16, "RMDIR"),
        (1 << 17, "LINK"),
        (1 << 19, "SYMLINK"),
        (1 << 18, "UNLINK"),
        (1 << 20, "RENAME"),
        (1 << 0, "CLONE"),
        (1 << 1, "EXEC"),
        (1 << 2, "EXIT"),
        (1 << 3, "SETUID"),
        (1 << 7, "OPEN"),
        (1 << 5, "ACCEPT"),
        (1 << 6, "CONNECT"),
        (1 << 10, "CLOSE"),
        (1 << 9, if network { "SEND" } else { "WRITE" }),
        (1 << 8, if network { "RECV" } else { "READ" }),
        (1 << 4, "SETNS"),
        (1 << 13, "MMAP"),
        (1 << 12, "SHUTDOWN"),
        (1 << 11, "TRUNCATE"),
        (1 << 14, "DIGEST"),
    ]
    .into_iter()
}

/// The bits [`op_flag_names`] names (0 through 20).
pub const NAMED_OP_FLAGS: i32 = (1 << 21) - 1;

/// sf-apis `GetOpenFlags`' names in its order (RDWR also lists RDONLY and WRONLY).
pub fn open_flag_names(flags: i64) -> Vec<&'static str> {
    if flags == 0 {
        return vec!["NONE"];
    }
    OPEN_FLAG_NAMES
        .iter()
        .filter(|(bits, _)| flags & bits == *bits)
        .map(|&(_, name)| name)
        .collect()
}

/// `GetOpenFlags`' table: a name for each set of bits all set.
pub const OPEN_FLAG_NAMES: [(i64, &str); 14] = [
    (1, "RDONLY"),
    (2, "WRONLY"),
    (3, "RDWR"),
    (4, "CREAT"),
    (32, "EXCL"),
    (256, "TRUNC"),
    (8, "APPEND"),
    (64, "NONBLOCK"),
    (16, "DSYNC"),
    (512, "DIRECT"),
    (2048, "LARGEFILE"),
    (1024, "DIRECTORY"),
    (4096, "CLOEXEC"),
    (128, "SYNC"),
];

/// The bits some name of [`OPEN_FLAG_NAMES`] has (0 through 12): flags without any name
/// nothing.
pub const NAMED_OPEN_FLAGS: i64 = (1 << 13) - 1;

pub fn container_type(v: i64) -> &'static str {
    const NAMES: [&str; 10] = [
        "DOCKER",
        "LXC",
        "LIBVIRT_LXC",
        "MESOS",
        "RKT",
        "CUSTOM",
        "CRI",
        "CONTAINERD",
        "CRIO",
        "BPM",
    ];
    usize::try_from(v)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("unknown")
}

pub fn k8s_action(v: i64) -> &'static str {
    usize::try_from(v)
        .ok()
        .and_then(|i| sysflow::K8sAction::SYMBOLS.get(i))
        .copied()
        .unwrap_or("unknown")
}

pub fn k8s_kind(v: i64) -> &'static str {
    usize::try_from(v)
        .ok()
        .and_then(|i| sysflow::K8sComponent::SYMBOLS.get(i))
        .copied()
        .unwrap_or("unknown")
}

/// easyjson's `Writer.String` (sf-processor's JSON encoder): `"` `\` and control characters
/// escaped, `<` `>` `&` as `\u003c` `\u003e` `\u0026`, U+2028/2029 escaped.
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' => {
                let _ = write!(out, "\\u00{:02x}", c as u32);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u00{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go `encoding/json` of pod services, as sf-processor's `sf.pod.services` holds it.
pub fn services_json(services: &[Service]) -> String {
    let mut out = String::from("[");
    for (i, s) in services.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        go_json_string(&mut out, &s.name);
        out.push_str(",\"id\":");
        go_json_string(&mut out, &s.id);
        out.push_str(",\"namespace\":");
        go_json_string(&mut out, &s.namespace);
        out.push_str(",\"portList\":[");
        for (j, p) in s.port_list.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"port\":{},\"targetPort\":{},\"nodePort\":{},\"proto\":",
                p.port, p.target_port, p.node_port
            );
            go_json_string(&mut out, &p.proto);
            out.push('}');
        }
        out.push_str("],\"clusterIP\":[");
        for (j, ip) in s.cluster_ip.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "{ip}");
        }
        out.push_str("]}");
    }
    out.push(']');
    out
}

/// `encoding/json`'s string escaping (HTML-safe, like easyjson's, but `\b` and `\f` short).
fn go_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => {
                let mut one = String::new();
                json_string(&mut one, c.encode_utf8(&mut [0; 4]));
                out.push_str(&one[1..one.len() - 1]);
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_paths() {
        assert_eq!(base(""), ".");
        assert_eq!(base("///"), "/");
        assert_eq!(base("/a/b/"), "b");
        assert_eq!(dir("/a"), "/");
        assert_eq!(dir("a"), ".");
        assert_eq!(dir("/a/b/"), "/a/b");
        assert_eq!(dir("/a/./c/../d"), "/a");
        assert_eq!(clean("/../x"), "/x");
        for p in [
            "/a", "/a/b/c", "a/b", "/a//b/c", "/a/./b", "/a/../b", "a/", "/", "x",
        ] {
            if let Some(d) = dir_if_clean(p) {
                assert_eq!(d, dir(p), "{p}");
            }
        }
        assert_eq!(dir_if_clean("/etc/passwd"), Some("/etc"));
        assert_eq!(dir_if_clean("/a//b"), None);
        assert_eq!(
            sym_path("ffffa046554ef800->ffffa046554eec00 /run/x y"),
            ("/run/x".into(), "ffffa046554ef800->ffffa046554eec00".into())
        );
        assert_eq!(
            sym_path("/etc/passwd"),
            ("/etc/passwd".into(), String::new())
        );
    }

    #[test]
    fn flags_in_sf_apis_order() {
        assert_eq!(op_flag_names(1280, false), ["CLOSE", "READ"]);
        assert_eq!(op_flag_names(1280, true), ["CLOSE", "RECV"]);
        assert_eq!(open_flag_names(3), ["RDONLY", "WRONLY", "RDWR"]);
        assert_eq!(open_flag_names(0), ["NONE"]);
        assert!(open_flag_names(8192).is_empty());
    }

    #[test]
    fn easyjson_escaping() {
        let mut out = String::new();
        json_string(&mut out, "<NA> \"a\\b\"\n\u{1}");
        assert_eq!(out, "\"\\u003cNA\\u003e \\\"a\\\\b\\\"\\n\\u0001\"");
    }
}
