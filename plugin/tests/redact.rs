//! `nri-sysflow redact-check`: what the agent records of a command line, with the built-in
//! patterns and with a config's extra flags.

use std::path::Path;

#[path = "support/cli.rs"]
mod cli;

use cli::run;

#[test]
fn redact_check_prints_the_recorded_command_line_and_the_patterns() {
    let (code, out, err) = run(&[
        "redact-check",
        "mysql",
        "-uroot",
        "-phunter2",
        "--password=x",
        "mysql://app:pw@db/shop",
        "PGPASSWORD=y",
    ]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            0,
            "mysql -uroot -p<redacted> --password=<redacted> mysql://app:<redacted>@db/shop PGPASSWORD=<redacted>\nflag: 1\nassignment: 1\nurl_password: 1\nclient_flag: 1\n",
            ""
        )
    );
}

#[test]
fn a_configs_extra_flags_and_the_switch_apply() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, "capture:\n  redact_flags: [--vault-token]\n").unwrap();
    let config = config.to_str().unwrap();
    let (code, out, _) = run(&[
        "redact-check",
        "--config",
        config,
        "vault",
        "--vault-token",
        "s.1",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "vault --vault-token <redacted>\nflag: 1\n")
    );

    let off = Path::new(dir.path()).join("off.yaml");
    std::fs::write(&off, "capture:\n  redact_args: false\n").unwrap();
    let (code, out, _) = run(&[
        "redact-check",
        "--config",
        off.to_str().unwrap(),
        "app",
        "--password=x",
    ]);
    assert_eq!((code, out.as_str()), (0, "app --password=x\n"));
}

#[test]
fn a_config_writable_by_every_user_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, "capture:\n  redact_args: false\n").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, out, err) = run(&["redact-check", "--config", config.to_str().unwrap(), "app"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.contains(&format!(
            "writable by every user (mode 0666): refusing it (chmod o-w {})",
            config.display()
        )),
        "{err}"
    );
}
