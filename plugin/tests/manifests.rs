//! The manifests in deploy/ as a cluster would get them: the kustomization rendered by
//! `kubectl kustomize`, the Helm chart rendered by Helm's own engine (deploy/tools/
//! render_chart.py, Helm's Go SDK through helm-python-sdk) with its default values and with
//! values-export.yaml, every object checked against the Kubernetes API's own types (the
//! `kubernetes` Python client's models, deploy/tools/check_manifests.py), and the files the
//! agent reads from the ConfigMaps accepted by the agent itself. Needs the test venv and
//! kubectl (`cargo xtask setup` installs both).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value as Json, json};

#[path = "support/cli.rs"]
mod cli;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    Path::new(&std::env::var_os("HOME").unwrap()).join(".local/share/nri-sysflow/venv/bin/python")
}

/// check_manifests.py over `paths`: (exit code, stdout).
fn check(paths: &[&Path]) -> (Option<i32>, String) {
    let out = Command::new(python())
        .arg(root().join("deploy/tools/check_manifests.py"))
        .args(paths)
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

/// The chart rendered with `values` (None: its defaults), written to `out`; the documents.
fn render_chart(values: Option<&Path>, out: &Path) -> Vec<Json> {
    let rendered = Command::new(python())
        .arg(root().join("deploy/tools/render_chart.py"))
        .arg(root().join("deploy/helm/nri-sysflow"))
        .args(values)
        .output()
        .unwrap();
    assert_eq!(
        rendered.status.code(),
        Some(0),
        "render_chart.py: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    std::fs::write(out, &rendered.stdout).unwrap();
    documents(&String::from_utf8(rendered.stdout).unwrap())
}

fn documents(yaml: &str) -> Vec<Json> {
    serde_saphyr::from_multiple::<Json>(yaml)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn kustomized() -> Vec<Json> {
    let out = Command::new("kubectl")
        .args(["kustomize", "deploy"])
        .current_dir(root())
        .output()
        .expect("kubectl (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    documents(&String::from_utf8(out.stdout).unwrap())
}

fn object<'a>(docs: &'a [Json], kind: &str) -> &'a Json {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// A YAML text parsed, with null values and the maps they leave empty removed: two configs
/// the agent reads the same way compare equal.
fn parsed_without_nulls(yaml: &str) -> Json {
    fn strip(v: Json) -> Option<Json> {
        match v {
            Json::Null => None,
            Json::Object(map) => {
                let map: serde_json::Map<String, Json> = map
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, strip(v)?)))
                    .collect();
                (!map.is_empty()).then_some(Json::Object(map))
            }
            other => Some(other),
        }
    }
    strip(serde_saphyr::from_str::<Json>(yaml).unwrap()).unwrap_or(Json::Null)
}

/// The ConfigMap's files written to a folder, then checked by the agent: the config loads and
/// validates, the policy checks, the rules compile with no warning. Returns the config.
fn agent_accepts(config_map: &Json) -> nri_sysflow::agent::config::AgentConfig {
    let dir = tempfile::tempdir().unwrap();
    let data = config_map["data"].as_object().unwrap();
    for (name, text) in data {
        std::fs::write(dir.path().join(name), text.as_str().unwrap()).unwrap();
    }
    let config_path = dir.path().join("agent.yaml");
    let config = nri_sysflow::agent::config::AgentConfig::load(&config_path).unwrap();
    config.validate(&config_path).unwrap();
    let policy = dir.path().join("policy.yaml");
    let (code, out, err) = cli::run(&["policy", "check", policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let rules = dir.path().join("runtime.yaml");
    let (code, out, err) = cli::run(&["rules", "check", "--strict", rules.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    config
}

#[test]
fn the_kustomization_renders_and_every_object_matches_the_api_types() {
    let (code, out) = check(&[Path::new("deploy/kustomization.yaml")]);
    assert_eq!(
        (code, out.as_str()),
        (
            Some(0),
            "deploy/kustomization.yaml (kubectl kustomize): Namespace, ServiceAccount, ConfigMap, Service, DaemonSet, PodMonitor (custom resource, not checked)\n"
        )
    );
    let docs = kustomized();
    let config_map = object(&docs, "ConfigMap");
    // The ConfigMap carries the node's config and policy and the shipped rules, unchanged.
    for (key, file) in [
        ("agent.yaml", "deploy/node/agent.yaml"),
        ("policy.yaml", "deploy/node/policy.yaml"),
        ("runtime.yaml", "deploy/rules/runtime.yaml"),
    ] {
        assert_eq!(
            config_map["data"][key].as_str().unwrap(),
            std::fs::read_to_string(root().join(file)).unwrap(),
            "{key}"
        );
    }
    let config = agent_accepts(config_map);
    assert_eq!(config.output.dir, Path::new("/var/lib/nri-sysflow"));
    assert_eq!(
        config.detection.rules,
        vec![PathBuf::from("/etc/nri-sysflow/rules")]
    );
    assert_eq!(config.export.url, None);
}

#[test]
fn the_chart_with_default_values_installs_what_the_kustomization_installs() {
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("chart.yaml");
    let chart = render_chart(None, &rendered);
    let (code, out) = check(&[&rendered]);
    assert_eq!(
        (code, out),
        (
            Some(0),
            format!(
                "{}: ConfigMap, DaemonSet, Service, ServiceAccount\n",
                rendered.display()
            )
        )
    );
    let kustomize = kustomized();

    let (ours, theirs) = (object(&chart, "ConfigMap"), object(&kustomize, "ConfigMap"));
    assert_eq!(
        parsed_without_nulls(ours["data"]["agent.yaml"].as_str().unwrap()),
        parsed_without_nulls(theirs["data"]["agent.yaml"].as_str().unwrap())
    );
    assert_eq!(
        parsed_without_nulls(ours["data"]["policy.yaml"].as_str().unwrap()),
        parsed_without_nulls(theirs["data"]["policy.yaml"].as_str().unwrap())
    );
    // The chart's rules file is deploy/rules/runtime.yaml itself (a link into the chart).
    assert_eq!(ours["data"]["runtime.yaml"], theirs["data"]["runtime.yaml"]);
    agent_accepts(ours);

    // The same pod: namespaces, privileges, mounts, volumes, environment, probes, resources.
    let (ours, theirs) = (object(&chart, "DaemonSet"), object(&kustomize, "DaemonSet"));
    assert_eq!(
        ours["spec"]["template"]["spec"],
        theirs["spec"]["template"]["spec"]
    );
    assert_eq!(
        ours["spec"]["updateStrategy"],
        theirs["spec"]["updateStrategy"]
    );
    assert_eq!(
        object(&chart, "Service")["spec"]["ports"],
        object(&kustomize, "Service")["spec"]["ports"]
    );
}

#[test]
fn the_chart_with_export_values_renders_export_the_agent_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("chart.yaml");
    let values = root().join("deploy/helm/nri-sysflow/values-export.yaml");
    let chart = render_chart(Some(&values), &rendered);
    let (code, out) = check(&[&rendered]);
    assert_eq!(
        (code, out),
        (
            Some(0),
            format!(
                "{}: ConfigMap, DaemonSet, PodMonitor (custom resource, not checked), Service, ServiceAccount\n",
                rendered.display()
            )
        )
    );
    let config = agent_accepts(object(&chart, "ConfigMap"));
    assert_eq!(config.export.url.as_deref(), Some("s3://sysflow/archive"));
    assert_eq!(
        config.export.endpoint.as_deref(),
        Some("http://minio.storage.svc:9000")
    );
    assert_eq!(config.export.cluster, "prod-eu1");
    assert!(config.export.create_bucket);

    let pod = &object(&chart, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.example.com/nri-sysflow@sha256:0000000000000000000000000000000000000000000000000000000000000000"
    );
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    let secret = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "s3-credentials")
        .unwrap();
    assert_eq!(
        secret["secret"],
        json!({"secretName": "sysflow-store", "optional": true})
    );
    assert_eq!(
        object(&chart, "PodMonitor")["spec"]["podMetricsEndpoints"],
        json!([{"port": "metrics", "path": "/metrics", "interval": "30s"}])
    );
}

#[test]
fn export_enabled_without_a_url_fails_to_render_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "export:\n  enabled: true\n").unwrap();
    let out = Command::new(python())
        .arg(root().join("deploy/tools/render_chart.py"))
        .arg(root().join("deploy/helm/nri-sysflow"))
        .arg(&values)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("export.url is required when export.enabled"),
        "{err}"
    );
}

#[test]
fn an_unknown_field_and_a_mistyped_value_are_named_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n    spec:\n      hostPid: true\n      containers:\n        - name: agent\n          ports: [{containerPort: \"9464\"}]\n",
    )
    .unwrap();
    let (code, out) = check(&[&bad]);
    let doc = format!("{} document 1 (DaemonSet)", bad.display());
    assert_eq!(
        (code, out),
        (
            Some(1),
            format!(
                "{}: DaemonSet\n{doc}.spec.template.spec.hostPid: unknown field of V1PodSpec\n{doc}.spec.template.spec.containers[0].ports[0].containerPort: '9464' is not int\n",
                bad.display()
            )
        )
    );
}
