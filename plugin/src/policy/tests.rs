use sysflow_common::capture;

use super::*;
use crate::capture::CaptureMode;

const EXAMPLE: &str = "\
default: process+file
host: process
rules:
  - namespaces: [kube-system]
    mode: off
  - namespaces: [\"team-*\"]
    pod_selector:
      match_labels: {tier: web}
      match_expressions:
        - {key: track, operator: NotIn, values: [canary]}
    mode: all
    allow_pod_override: true
    paths: {include: [/app, /etc], exclude: [/etc/ssl]}
";

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn rules_match_by_namespace_glob_and_labels_first_match_wins() {
    let p = Policy::parse(EXAMPLE, "policy.yaml").unwrap();
    assert_eq!(p.host, CaptureMode::PROCESS);
    let none = HashMap::new();
    let d = p.decide("kube-system", &map(&[("tier", "web")]), &none);
    assert_eq!((d.mode, d.reason.as_str()), (CaptureMode::OFF, "rule 1"));
    let d = p.decide("team-a", &map(&[("tier", "web")]), &none);
    assert_eq!((d.mode, d.reason.as_str()), (CaptureMode::ALL, "rule 2"));
    assert_eq!(d.paths.include, vec!["/app", "/etc"]);
    // The NotIn expression excludes canaries; a missing label fails match_labels.
    let d = p.decide(
        "team-a",
        &map(&[("tier", "web"), ("track", "canary")]),
        &none,
    );
    assert_eq!(
        (d.mode, d.reason.as_str()),
        (
            CaptureMode::from_bits(capture::PROCESS | capture::FILE),
            "default"
        )
    );
    let d = p.decide("team-a", &none, &none);
    assert_eq!(d.reason, "default");
    let d = p.decide("teamb", &map(&[("tier", "web")]), &none);
    assert_eq!(d.reason, "default");
}

#[test]
fn pod_annotation_overrides_only_where_allowed() {
    let p = Policy::parse(EXAMPLE, "policy.yaml").unwrap();
    let off = map(&[(OVERRIDE_ANNOTATION, "off")]);
    // Rule 2 allows overrides.
    let d = p.decide("team-a", &map(&[("tier", "web")]), &off);
    assert_eq!(d.mode, CaptureMode::OFF);
    assert_eq!(d.reason, "annotation sysflow.io/capture=off");
    // Rule 1 and the default do not (allow_pod_override is false at the top).
    let all = map(&[(OVERRIDE_ANNOTATION, "all")]);
    assert_eq!(
        p.decide("kube-system", &HashMap::new(), &all).mode,
        CaptureMode::OFF
    );
    assert_eq!(
        p.decide("other", &HashMap::new(), &all).mode,
        CaptureMode::from_bits(capture::PROCESS | capture::FILE)
    );
    // An unknown mode in the annotation is ignored.
    let bad = map(&[(OVERRIDE_ANNOTATION, "everything")]);
    assert_eq!(
        p.decide("team-a", &map(&[("tier", "web")]), &bad).mode,
        CaptureMode::ALL
    );
}

#[test]
fn path_prefixes_match_whole_components() {
    let f = PathFilter {
        include: vec!["/app".into(), "/etc/".into()],
        exclude: vec!["/etc/ssl".into()],
    };
    assert!(f.allows("/app"));
    assert!(f.allows("/app/x/y"));
    assert!(!f.allows("/application"));
    assert!(f.allows("/etc/passwd"));
    assert!(!f.allows("/etc/ssl/cert.pem"));
    assert!(!f.allows("/tmp/x"));
    assert!(PathFilter::default().allows("/anything"));
}

#[test]
fn every_value_problem_is_reported_with_its_place() {
    let text = "\
default: everything
rules:
  - namespaces: [\"team-[\"]
    mode: all
  - pod_selector:
      match_expressions:
        - {key: a, operator: Maybe}
        - {key: b, operator: In}
    mode: process
    paths: {include: [app]}
";
    let err = Policy::parse(text, "p.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml:1:10: unknown capture mode \"everything\": expected off, lifecycle, process, process+file, all or flows-without-io, or kinds joined with + (process, lifecycle, process-syscalls, file, network, io)\n\
         p.yaml:3:18: invalid namespace glob \"team-[\": unclosed character class; missing ']'\n\
         p.yaml:7:30: unknown operator \"Maybe\": expected In, NotIn, Exists or DoesNotExist\n\
         p.yaml:8:30: In needs a non-empty values list\n\
         p.yaml:10:23: path prefix \"app\" is not absolute: expected a path starting with /"
    );
}

#[test]
fn structural_problems_name_the_place_and_what_is_expected() {
    let err = Policy::parse(
        "default: all\nrules:\n  - mode: off\n    namespace: [x]\n",
        "p.yaml",
    )
    .unwrap_err();
    assert_eq!(err.problems.len(), 1);
    let p = &err.problems[0];
    assert_eq!((p.line, p.column), (4, 5), "{err}");
    assert_eq!(
        err.to_string(),
        "p.yaml:4:5: unknown field `namespace`, expected one of namespaces, pod_selector, mode, allow_pod_override, paths"
    );
    let err = Policy::parse("rules:\n  - namespaces: [a]\n", "p.yaml").unwrap_err();
    assert!(
        err.problems[0].message.contains("missing field `mode`"),
        "{err}"
    );
    let err = Policy::parse("default: [all]\n", "p.yaml").unwrap_err();
    assert_eq!(err.problems[0].line, 1, "{err}");
}

#[test]
fn the_deploy_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy.yaml");
    let p = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.rule_count() >= 2);
}
