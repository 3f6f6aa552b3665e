//! Store credentials, the ways this ecosystem passes them, first found wins:
//! 1. the standard AWS variables `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and
//!    `AWS_SESSION_TOKEN`);
//! 2. files mounted from a Kubernetes (or Docker) secret under sf-exporter's names,
//!    `<secrets_dir>/s3_access_key` and `s3_secret_key`, or in its `k8s/` subfolder;
//! 3. the AWS shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//!    `~/.aws/credentials`), profile `AWS_PROFILE` or `default`.
//!
//! With none of them the store client's own chain applies (web identity, ECS, instance
//! metadata), or anonymous requests where the store allows them.

use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub key_id: String,
    pub secret: String,
    pub token: Option<String>,
    /// Where they came from, for the log (never the values).
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("{found} is set but {missing} is not")]
    HalfPair { found: String, missing: String },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path}: no profile [{profile}] with aws_access_key_id and aws_secret_access_key")]
    NoProfile { path: PathBuf, profile: String },
}

/// Finds credentials; `env` reads a variable, `home` is the user's home folder.
pub fn find(
    secrets_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<Option<Credentials>, CredentialsError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(key_id), Some(secret)) => {
            return Ok(Some(Credentials {
                key_id,
                secret,
                token: var("AWS_SESSION_TOKEN"),
                source: "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".into(),
            }));
        }
        (Some(_), None) => {
            return Err(CredentialsError::HalfPair {
                found: "AWS_ACCESS_KEY_ID".into(),
                missing: "AWS_SECRET_ACCESS_KEY".into(),
            });
        }
        (None, Some(_)) => {
            return Err(CredentialsError::HalfPair {
                found: "AWS_SECRET_ACCESS_KEY".into(),
                missing: "AWS_ACCESS_KEY_ID".into(),
            });
        }
        (None, None) => {}
    }
    for dir in [secrets_dir.to_path_buf(), secrets_dir.join("k8s")] {
        if let Some(found) = secret_files(&dir)? {
            return Ok(Some(found));
        }
    }
    let (path, named) = match var("AWS_SHARED_CREDENTIALS_FILE") {
        Some(path) => (PathBuf::from(path), true),
        None => match home {
            Some(home) => (home.join(".aws/credentials"), false),
            None => return Ok(None),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        // The default file simply not being there is the common case.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(None),
        Err(e) => {
            return Err(CredentialsError::Unreadable {
                path,
                reason: e.to_string(),
            });
        }
    };
    let profile_named = var("AWS_PROFILE");
    let profile = profile_named.clone().unwrap_or_else(|| "default".into());
    let ini = ini::Ini::load_from_str(&text).map_err(|e| CredentialsError::Unreadable {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let section = ini.section(Some(profile.as_str()));
    let get = |key: &str| {
        section
            .and_then(|s| s.get(key))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(key_id), Some(secret)) => Ok(Some(Credentials {
            key_id,
            secret,
            token: get("aws_session_token"),
            source: format!("{} [{profile}]", path.display()),
        })),
        // No default profile in a file nobody named is no error; a named profile or file
        // that lacks them is.
        _ if profile_named.is_none() && !named => Ok(None),
        _ => Err(CredentialsError::NoProfile { path, profile }),
    }
}

fn secret_files(dir: &Path) -> Result<Option<Credentials>, CredentialsError> {
    let read = |name: &str| -> Result<Option<String>, CredentialsError> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(v) => Ok(Some(v.trim().to_string()).filter(|v| !v.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CredentialsError::Unreadable {
                path,
                reason: e.to_string(),
            }),
        }
    };
    match (read("s3_access_key")?, read("s3_secret_key")?) {
        (Some(key_id), Some(secret)) => Ok(Some(Credentials {
            key_id,
            secret,
            token: None,
            source: format!("{}/s3_access_key, s3_secret_key", dir.display()),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(CredentialsError::HalfPair {
            found: dir.join("s3_access_key").display().to_string(),
            missing: dir.join("s3_secret_key").display().to_string(),
        }),
        (None, Some(_)) => Err(CredentialsError::HalfPair {
            found: dir.join("s3_secret_key").display().to_string(),
            missing: dir.join("s3_access_key").display().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn variables_then_secrets_then_the_profile_file() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        let home = dir.path().join("home");
        std::fs::create_dir_all(secrets.join("k8s")).unwrap();
        std::fs::create_dir_all(home.join(".aws")).unwrap();
        std::fs::write(
            home.join(".aws/credentials"),
            "[default]\naws_access_key_id = AKPROFILE\naws_secret_access_key = s3cr3t\n\n[ci]\naws_access_key_id=AKCI\naws_secret_access_key=ci-secret\naws_session_token=tok\n",
        )
        .unwrap();
        let found =
            |vars: &[(&str, &str)]| find(&secrets, env(vars), Some(&home)).unwrap().unwrap();

        let c = found(&[]);
        assert_eq!(
            (c.key_id.as_str(), c.secret.as_str()),
            ("AKPROFILE", "s3cr3t")
        );
        let c = found(&[("AWS_PROFILE", "ci")]);
        assert_eq!(
            (c.key_id.as_str(), c.token.as_deref()),
            ("AKCI", Some("tok"))
        );

        std::fs::write(secrets.join("k8s/s3_access_key"), "AKSECRET\n").unwrap();
        std::fs::write(secrets.join("k8s/s3_secret_key"), "from-secret\n").unwrap();
        let c = found(&[]);
        assert_eq!(
            (c.key_id.as_str(), c.secret.as_str()),
            ("AKSECRET", "from-secret")
        );
        assert_eq!(
            c.source,
            format!("{}/k8s/s3_access_key, s3_secret_key", secrets.display())
        );

        let c = found(&[
            ("AWS_ACCESS_KEY_ID", "AKENV"),
            ("AWS_SECRET_ACCESS_KEY", "env"),
        ]);
        assert_eq!((c.key_id.as_str(), c.token), ("AKENV", None));
    }

    #[test]
    fn half_pairs_and_missing_profiles_are_errors_and_nothing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(find(d, env(&[]), Some(d)), Ok(None));
        assert_eq!(
            find(d, env(&[("AWS_ACCESS_KEY_ID", "AK")]), Some(d))
                .unwrap_err()
                .to_string(),
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"
        );
        std::fs::write(d.join("s3_secret_key"), "x").unwrap();
        assert_eq!(
            find(d, env(&[]), Some(d)).unwrap_err().to_string(),
            format!(
                "{}/s3_secret_key is set but {}/s3_access_key is not",
                d.display(),
                d.display()
            )
        );
        std::fs::remove_file(d.join("s3_secret_key")).unwrap();
        let file = d.join("creds");
        std::fs::write(&file, "[default]\naws_access_key_id = AK\n").unwrap();
        let named = [("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap())];
        assert_eq!(
            find(d, env(&named), None).unwrap_err().to_string(),
            format!(
                "{}: no profile [default] with aws_access_key_id and aws_secret_access_key",
                file.display()
            )
        );
    }
}
