//! The manifests in deploy/ checked against the Kubernetes API's own types (the `kubernetes`
//! Python client's models, generated from the API's OpenAPI spec), through deploy/tools/
//! check_manifests.py; needs the test venv.

use std::{path::Path, process::Command};

fn check(paths: &[&Path]) -> (Option<i32>, String) {
    let venv = Path::new(&std::env::var_os("HOME").unwrap()).join(".local/share/nri-sysflow/venv");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(venv.join("bin/python"))
        .arg(root.join("deploy/tools/check_manifests.py"))
        .args(paths)
        .current_dir(&root)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn the_kustomization_and_every_manifest_it_lists_match_the_api_types() {
    let (code, out) = check(&[Path::new("deploy/kustomization.yaml")]);
    assert_eq!(
        (code, out.as_str()),
        (
            Some(0),
            "deploy/daemonset.yaml: Namespace, ConfigMap, ServiceAccount, Service, DaemonSet, PodMonitor (custom resource, not checked)\ndeploy/kustomization.yaml: 1 resources\n"
        )
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
