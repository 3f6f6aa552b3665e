//! Secrets in command lines, replaced by `<redacted>` before a record holds them: the SysFlow
//! files and alerts carry every workload's command lines, and clients take passwords and
//! tokens as arguments. The patterns (each counted on its own):
//!
//! * `flag`: a secret-bearing flag's value, `--password=x` or `--password x` (built-in names
//!   plus `capture.redact_flags`);
//! * `assignment`: `NAME=value` or `-DNAME=value` where NAME looks secret (the environment's
//!   markers: TOKEN, SECRET, PASSWORD, KEY, ...), e.g. `env AWS_SECRET_ACCESS_KEY=...`;
//! * `url_password`: the password of `scheme://user:password@host` anywhere in an argument;
//! * `client_flag`: known clients' own forms: mysql/mariadb `-pSECRET`, sshpass `-p`,
//!   redis-cli `-a`, curl `-u user:password`;
//! * `auth_header`: an `Authorization:` (or `Proxy-Authorization:`) header's value.
//!
//! What they cannot see: a secret passed positionally with nothing marking it, one split
//! across arguments other than as above, or one encoded (base64 in a JSON argument, say).

use crate::host::proc::is_secret_name;

pub const REDACTED: &str = "<redacted>";

/// The patterns, in the order of their counters.
pub const PATTERNS: [&str; 5] = [
    "flag",
    "assignment",
    "url_password",
    "client_flag",
    "auth_header",
];

/// Redactions so far, by pattern (indexes of `PATTERNS`).
pub type RedactionCounts = [u64; PATTERNS.len()];

const FLAG: usize = 0;
const ASSIGNMENT: usize = 1;
const URL_PASSWORD: usize = 2;
const CLIENT_FLAG: usize = 3;
const AUTH_HEADER: usize = 4;

/// Flags whose value is a secret, as common clients spell them.
const SECRET_FLAGS: &[&str] = &[
    "--password",
    "--passwd",
    "--pass",
    "--pwd",
    "--token",
    "--access-token",
    "--auth-token",
    "--bearer-token",
    "--refresh-token",
    "--api-key",
    "--apikey",
    "--api-token",
    "--secret",
    "--client-secret",
    "--secret-key",
    "--access-key",
    "--secret-access-key",
    "--aws-secret-access-key",
    "--db-password",
    "--admin-password",
    "--root-password",
    "--encryption-key",
];

#[derive(Clone, Debug)]
pub struct ArgRedactor {
    enabled: bool,
    /// Lower-case flag names, dashes included.
    flags: Vec<String>,
}

impl Default for ArgRedactor {
    fn default() -> Self {
        ArgRedactor::new(true, &[])
    }
}

impl ArgRedactor {
    /// `extra_flags` are added to the built-in ones (`--vault-token`, `-P`, ...).
    pub fn new(enabled: bool, extra_flags: &[String]) -> ArgRedactor {
        let mut flags: Vec<String> = SECRET_FLAGS.iter().map(|f| f.to_string()).collect();
        flags.extend(extra_flags.iter().map(|f| f.to_ascii_lowercase()));
        ArgRedactor { enabled, flags }
    }

    fn is_secret_flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(name))
    }

    /// Redacts `args` (argv without argv[0]) of `program` (a path or a name) in place, adding
    /// each redaction to `counts`.
    pub fn redact(&self, program: &str, args: &mut [String], counts: &mut RedactionCounts) {
        if !self.enabled {
            return;
        }
        let program = program.rsplit('/').next().unwrap_or(program);
        let mut next_is_secret: Option<usize> = None;
        for arg in args.iter_mut() {
            if let Some(pattern) = next_is_secret.take() {
                *arg = match (pattern, arg.split_once(':')) {
                    // curl -u user:password keeps the user.
                    (CLIENT_FLAG, Some((user, _))) if program == "curl" => {
                        format!("{user}:{REDACTED}")
                    }
                    _ => REDACTED.to_string(),
                };
                counts[pattern] += 1;
                continue;
            }
            if let Some(pattern) = self.redact_one(program, arg) {
                counts[pattern] += 1;
                continue;
            }
            // A flag whose value is the next argument.
            if self.is_secret_flag(arg) {
                next_is_secret = Some(FLAG);
            } else if client_flag_takes_next(program, arg) {
                next_is_secret = Some(CLIENT_FLAG);
            }
            if let Some(n) = redact_urls(arg) {
                counts[URL_PASSWORD] += n;
            }
        }
    }

    /// One argument that holds its own secret; the pattern that matched.
    fn redact_one(&self, program: &str, arg: &mut String) -> Option<usize> {
        if let Some((name, _)) = arg.split_once('=')
            && name.starts_with('-')
            && !name.starts_with("-D")
            && self.is_secret_flag(name)
        {
            *arg = format!("{name}={REDACTED}");
            return Some(FLAG);
        }
        if let Some((name, value)) = arg.split_once('=') {
            let key = name.strip_prefix("-D").unwrap_or(name);
            let env_like = !key.is_empty()
                && !key.starts_with('-')
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if env_like && !value.is_empty() && is_secret_name(key) {
                *arg = format!("{name}={REDACTED}");
                return Some(ASSIGNMENT);
            }
        }
        let lower = arg.to_ascii_lowercase();
        for header in ["authorization:", "proxy-authorization:"] {
            if let Some(at) = lower.find(header) {
                let keep = at + header.len();
                *arg = format!("{} {REDACTED}", &arg[..keep]);
                return Some(AUTH_HEADER);
            }
        }
        // `-pSECRET` (attached) for MySQL's and MariaDB's clients, sshpass and redis-cli.
        let attached = match program {
            p if p.starts_with("mysql") || p.starts_with("mariadb") => "-p",
            "sshpass" => "-p",
            "redis-cli" => "-a",
            _ => "",
        };
        if !attached.is_empty() && arg.len() > 2 && arg.starts_with(attached) {
            *arg = format!("{attached}{REDACTED}");
            return Some(CLIENT_FLAG);
        }
        None
    }
}

/// Client flags whose value is the next argument (mysql's `-p value` is not: there the value
/// is the database and the password is prompted for).
fn client_flag_takes_next(program: &str, arg: &str) -> bool {
    matches!(
        (program, arg),
        ("sshpass", "-p") | ("redis-cli", "-a") | ("curl", "-u") | ("curl", "--user")
    )
}

/// Replaces the password of every `scheme://user:password@` in `arg`; how many.
fn redact_urls(arg: &mut String) -> Option<u64> {
    let mut count = 0;
    let mut from = 0;
    while let Some(found) = arg[from..].find("://") {
        let start = from + found + 3;
        let authority_end = arg[start..]
            .find(['/', '?', '#', ' '])
            .map_or(arg.len(), |i| start + i);
        let authority = &arg[start..authority_end];
        match authority.rfind('@') {
            Some(at) if authority[..at].contains(':') => {
                let colon = start + authority[..at].find(':').unwrap_or(0);
                let at = start + at;
                if &arg[colon + 1..at] != REDACTED {
                    arg.replace_range(colon + 1..at, REDACTED);
                    count += 1;
                }
                from = colon + 1 + REDACTED.len() + 1;
            }
            _ => from = authority_end,
        }
        if from >= arg.len() {
            break;
        }
    }
    (count > 0).then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(program: &str, args: &[&str]) -> (String, RedactionCounts) {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut counts = RedactionCounts::default();
        ArgRedactor::new(true, &["--vault-token".to_string()]).redact(
            program,
            &mut args,
            &mut counts,
        );
        (args.join(" "), counts)
    }

    #[test]
    fn secret_flags_with_attached_or_separate_values() {
        assert_eq!(
            redact(
                "app",
                &["--password=hunter2", "--user", "bob", "--TOKEN", "abc"]
            ),
            (
                "--password=<redacted> --user bob --TOKEN <redacted>".into(),
                [2, 0, 0, 0, 0]
            )
        );
        // Configured extra flags count as flags.
        assert_eq!(
            redact("vault", &["login", "--vault-token=s.123"]).0,
            "login --vault-token=<redacted>"
        );
        // A flag at the end has no value to hide.
        assert_eq!(
            redact("app", &["--password"]),
            ("--password".into(), [0; 5])
        );
    }

    #[test]
    fn secret_looking_assignments() {
        assert_eq!(
            redact(
                "/usr/bin/env",
                &[
                    "AWS_SECRET_ACCESS_KEY=wJalr",
                    "PGPASSWORD=x",
                    "HOME=/root",
                    "aws",
                    "s3",
                    "ls"
                ]
            ),
            (
                "AWS_SECRET_ACCESS_KEY=<redacted> PGPASSWORD=<redacted> HOME=/root aws s3 ls"
                    .into(),
                [0, 2, 0, 0, 0]
            )
        );
        assert_eq!(
            redact(
                "java",
                &[
                    "-Djavax.net.ssl.keyStorePassword=changeit",
                    "-Dfile.encoding=UTF-8"
                ]
            )
            .0,
            "-Djavax.net.ssl.keyStorePassword=<redacted> -Dfile.encoding=UTF-8"
        );
    }

    #[test]
    fn url_passwords_anywhere_in_an_argument() {
        assert_eq!(
            redact(
                "psql",
                &["postgres://app:s3cr%40t@db:5432/shop", "--url=https://u:p@h/x?y=1", "https://example.com/a@b"]
            ),
            (
                "postgres://app:<redacted>@db:5432/shop --url=https://u:<redacted>@h/x?y=1 https://example.com/a@b"
                    .into(),
                [0, 0, 2, 0, 0]
            )
        );
    }

    #[test]
    fn known_clients_own_forms() {
        assert_eq!(
            redact("/usr/bin/mysql", &["-uroot", "-phunter2", "-p", "shop"]),
            ("-uroot -p<redacted> -p shop".into(), [0, 0, 0, 1, 0])
        );
        assert_eq!(
            redact("sshpass", &["-p", "pw", "ssh", "host"]).0,
            "-p <redacted> ssh host"
        );
        assert_eq!(
            redact("redis-cli", &["-a", "pw", "get", "k"]).0,
            "-a <redacted> get k"
        );
        assert_eq!(
            redact(
                "curl",
                &[
                    "-u",
                    "alice:pw",
                    "-H",
                    "Authorization: Bearer eyJ",
                    "https://x"
                ]
            ),
            (
                "-u alice:<redacted> -H Authorization: <redacted> https://x".into(),
                [0, 0, 0, 1, 1]
            )
        );
        // Other programs' -p is not a password.
        assert_eq!(redact("ssh", &["-p2222", "host"]).0, "-p2222 host");
    }

    #[test]
    fn off_redacts_nothing() {
        let mut args = vec!["--password=x".to_string()];
        let mut counts = RedactionCounts::default();
        ArgRedactor::new(false, &[]).redact("app", &mut args, &mut counts);
        assert_eq!((args[0].as_str(), counts), ("--password=x", [0; 5]));
    }
}
