//! uid/gid -> user and group names from the host's /etc/passwd and /etc/group, read once.

use std::collections::HashMap;

use crate::host::Host;

#[derive(Default)]
pub struct UserNames {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

fn parse(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split(':');
            let name = parts.next()?;
            let id = parts.nth(1)?.parse().ok()?;
            Some((id, name.to_owned()))
        })
        .collect()
}

impl UserNames {
    pub fn load(host: &Host) -> Self {
        UserNames {
            users: parse(&host.etc_file("passwd")),
            groups: parse(&host.etc_file("group")),
        }
    }

    /// The user name, or empty when the host does not know the uid.
    pub fn user(&self, uid: u32) -> String {
        self.users.get(&uid).cloned().unwrap_or_default()
    }

    pub fn group(&self, gid: u32) -> String {
        self.groups.get(&gid).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_lines() {
        let m = parse(
            "root:x:0:0:root:/root:/bin/bash\n# c\nnobody:x:65534:65534::/:/bin/false\nbad\n",
        );
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&65534).map(String::as_str), Some("nobody"));
        assert_eq!(m.len(), 2);
    }
}
