//! Detection rules in the running agent: a rule that matches a known workload's record raises
//! exactly one alert (a JSON line in the alert file, and the alert counter), a broken rules
//! file is rejected with its position while the rules in force keep working, and a fixed one
//! is applied without a restart.

use std::time::{Duration, Instant};

use super::*;

fn rules(rule: &str, secret: &Path) -> String {
    format!(
        "- rule: {rule}\n  desc: the test's secret file was opened\n  condition: sf.type = FF and sf.opflags = OPEN and sf.file.path = \"{}\"\n  priority: high\n  tags: [test]\n",
        secret.display()
    )
}

/// Waits until `series` has `value` in the agent's /metrics.
fn wait_metric(agent: &Agent, series: &str, value: f64) {
    let started = Instant::now();
    while agent.metric(series) != Some(value) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{series} is {:?}, not {value}",
            agent.metric(series)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The alert lines written so far (files complete or not).
fn alert_lines(dir: &Path) -> Vec<Json> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("alerts-"))
        })
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Json>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_rule_raises_one_alert_per_match_and_survives_a_broken_reload() {
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    let rules_file = work.path().join("rules.yaml");
    std::fs::write(&rules_file, rules("Opened the secret", &secret)).unwrap();
    let agent = Agent::start(&["--rules", rules_file.to_str().unwrap(), "--alerts", "-"]);
    let cgroup = TestCgroup::new("agent-rules");
    let open_secret = || {
        let status = cgroup
            .workload(&["loop-open", secret.to_str().unwrap(), "1"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    let series = |rule: &str| {
        format!(
            r#"nri_sysflow_alerts_total{{rule="{rule}",priority="high",namespace="",pod="",container=""}}"#
        )
    };

    open_secret();
    wait_metric(&agent, &series("Opened the secret"), 1.0);
    let alerts = alert_lines(&agent.output);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a["type"], "FF");
    assert_eq!(a["file"]["path"], secret.to_str().unwrap());
    assert_eq!(a["proc"]["exe"], WORKLOAD);
    assert_eq!(
        a["policies"],
        serde_json::json!([{"id": "Opened the secret", "desc": "the test's secret file was opened", "priority": 3}])
    );
    assert_eq!(a["tags"], serde_json::json!(["test"]));

    // A broken version (line 3, column 23: a negative number does not parse) is rejected;
    // the rules in force still fire.
    std::fs::write(
        &rules_file,
        "- rule: Broken\n  desc: d\n  condition: sf.ret < -1\n",
    )
    .unwrap();
    wait_metric(
        &agent,
        r#"nri_sysflow_rules_reloads_total{result="failed"}"#,
        1.0,
    );
    open_secret();
    wait_metric(&agent, &series("Opened the secret"), 2.0);

    // A fixed version is applied without a restart.
    std::fs::write(&rules_file, rules("Opened the secret again", &secret)).unwrap();
    wait_metric(
        &agent,
        r#"nri_sysflow_rules_reloads_total{result="ok"}"#,
        1.0,
    );
    open_secret();
    wait_metric(&agent, &series("Opened the secret again"), 1.0);
    assert_eq!(agent.metric("nri_sysflow_rules_loaded"), Some(1.0));
    // The pipeline's time handing records over is counted, and is a part of the run's.
    let handoff = agent
        .metric("nri_sysflow_rules_handoff_seconds_total")
        .unwrap();
    let cpu = agent.metric("nri_sysflow_agent_cpu_seconds_total").unwrap();
    assert!(handoff > 0.0 && handoff < cpu, "{handoff} s of {cpu} s");

    let output = agent.output.clone();
    let stopped = agent.stop();
    assert!(
        stopped.log.contains(&format!(
            "detection rules not reloaded, the rules in force stay: {}:3:23: expected an operand",
            rules_file.display()
        )),
        "{}",
        stopped.log
    );
    // The alert file completed under its final name, every alert in it.
    let names: Vec<String> = std::fs::read_dir(&output)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("alerts-"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".jsonl"), "{names:?}");
    let ids: Vec<String> = alert_lines(&output)
        .iter()
        .map(|a| a["policies"][0]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "Opened the secret",
            "Opened the secret",
            "Opened the secret again"
        ]
    ); // `--alerts -`: the same lines on stdout.
    let from_stdout: Vec<Json> = stopped
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(from_stdout, alert_lines(&output));
}
