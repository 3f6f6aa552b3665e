//! The shipped Grafana dashboards, checked as JSON: unique panel ids, every panel and query on
//! the datasource variable, titles, units and descriptions present, and the template variables
//! a user filters with. (Their queries run against a real Prometheus in e2e.rs.)

use std::{collections::HashSet, path::PathBuf};

use serde_json::Value as Json;

fn dashboards() -> Vec<(String, Json)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut out = Vec::new();
    for name in ["node-overview.json", "workload.json", "agent-health.json"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        out.push((name.to_string(), serde_json::from_str(&text).expect(name)));
    }
    out
}

#[test]
fn panels_have_unique_ids_titles_units_descriptions_and_the_datasource_variable() {
    for (name, d) in dashboards() {
        let panels = d["panels"].as_array().unwrap();
        assert!(panels.len() >= 6, "{name}");
        let mut ids = HashSet::new();
        for p in panels {
            let title = p["title"].as_str().unwrap_or("");
            assert!(
                ids.insert(p["id"].as_i64().unwrap()),
                "{name}: duplicate id in {title}"
            );
            assert!(!title.is_empty(), "{name}: panel without title");
            assert!(
                !p["description"].as_str().unwrap_or("").is_empty(),
                "{name}: {title}"
            );
            assert!(
                !p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .unwrap_or("")
                    .is_empty(),
                "{name}: {title}"
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}: {title}");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {title}");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {title}");
                assert!(
                    t["expr"].as_str().unwrap().contains("nri_sysflow_"),
                    "{name}: {title}"
                );
            }
        }
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(vars[0], "datasource", "{name}");
        assert_eq!(d["templating"]["list"][0]["query"], "prometheus");
        assert!(vars.contains(&"node"), "{name}");
    }
}

#[test]
fn the_workload_board_filters_by_namespace_pod_and_container() {
    let (_, d) = dashboards().remove(1);
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        vars,
        ["datasource", "node", "namespace", "pod", "container"]
    );
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap();
            assert!(
                e.contains(r#"namespace=~"$namespace""#)
                    && e.contains(r#"container=~"$container""#),
                "{e}"
            );
        }
    }
}
