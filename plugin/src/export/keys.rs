//! Where a file goes in the bucket and what it carries: sf-exporter's key layout
//! `[prefix/][cluster/][node/][nodeip/]YYYY/MM/DD/<name>` (the date is the UTC day the file was
//! started) and its `x-amz-meta-*` metadata. The key depends only on the file, so a retried
//! or repeated upload lands on the same object.
//!
//! The flat layout, `[prefix/]<name>`, is for buckets read with `sysprint -i s3`: sysprint
//! lists a bucket without recursing, so it reads only objects at the bucket's root (it fails
//! on sf-exporter's own dated keys).

/// The key segments before the date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    pub prefix: String,
    pub cluster: String,
    pub node: String,
    pub node_ip: String,
    /// false: the flat layout, `[prefix/]<name>`.
    pub dated: bool,
}

impl KeyLayout {
    pub fn key(&self, name: &str, started_secs: i64) -> String {
        let date = chrono::DateTime::from_timestamp(started_secs, 0)
            .unwrap_or_default()
            .format("%Y/%m/%d")
            .to_string();
        let mut key = String::new();
        if !self.dated {
            let prefix = self.prefix.trim_matches('/');
            if !prefix.is_empty() {
                key.push_str(prefix);
                key.push('/');
            }
            key.push_str(name);
            return key;
        }
        for segment in [&self.prefix, &self.cluster, &self.node, &self.node_ip] {
            let segment = segment.trim_matches('/');
            if !segment.is_empty() {
                key.push_str(segment);
                key.push('/');
            }
        }
        key.push_str(&date);
        key.push('/');
        key.push_str(name);
        key
    }
}

/// The pod the agent runs in, as the DaemonSet passes it (Kubernetes' downward API), and the
/// variables each comes from.
pub const POD_ENV: [(&str, &str); 5] = [
    ("podname", "POD_NAME"),
    ("podip", "POD_IP"),
    ("podservice", "POD_SERVICE"),
    ("podns", "POD_NAMESPACE"),
    ("poduuid", "POD_UID"),
];

/// sf-exporter's object metadata (`x-amz-meta-<key>`): the node, and the agent's pod where it
/// runs in one; empty values are left out.
pub fn metadata(
    node_name: &str,
    node_ip: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("nodename", node_name.to_string()),
        ("nodeip", node_ip.to_string()),
    ];
    for (key, var) in POD_ENV {
        out.push((key, env(var).unwrap_or_default()));
    }
    out.retain(|(_, v)| !v.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_sf_exporters_layout() {
        let mut layout = KeyLayout {
            prefix: "/archive/sysflow/".into(),
            cluster: "prod-eu".into(),
            node: "worker-1".into(),
            node_ip: "10.0.0.7".into(),
            dated: true,
        };
        // 1700000000 is 2023-11-14T22:13:20Z.
        assert_eq!(
            layout.key("worker-1-1700000000-000.sf", 1_700_000_000),
            "archive/sysflow/prod-eu/worker-1/10.0.0.7/2023/11/14/worker-1-1700000000-000.sf"
        );
        layout.prefix.clear();
        layout.cluster.clear();
        layout.node_ip.clear();
        assert_eq!(
            layout.key("alerts-1699999999-002.jsonl", 1_699_999_999),
            "worker-1/2023/11/14/alerts-1699999999-002.jsonl"
        );
        layout.dated = false;
        assert_eq!(
            layout.key("worker-1-1700000000-000.sf", 1_700_000_000),
            "worker-1-1700000000-000.sf"
        );
        layout.prefix = "sysprint/".into();
        assert_eq!(layout.key("a.sf", 0), "sysprint/a.sf");
    }

    #[test]
    fn metadata_has_the_node_and_the_pod_where_known() {
        let env = |var: &str| match var {
            "POD_NAME" => Some("nri-sysflow-abcde".to_string()),
            "POD_NAMESPACE" => Some("nri-sysflow".to_string()),
            "POD_IP" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            metadata("worker-1", "10.0.0.7", env),
            vec![
                ("nodename", "worker-1".to_string()),
                ("nodeip", "10.0.0.7".to_string()),
                ("podname", "nri-sysflow-abcde".to_string()),
                ("podns", "nri-sysflow".to_string()),
            ]
        );
    }
}
