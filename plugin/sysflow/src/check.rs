//! The format's rule, checked on a file: every entity a record refers to was written earlier
//! in the same file (after its last header).

use std::collections::HashSet;

use crate::records::Record;

/// Checks one file's records in order. Returns every violation, described (empty when the
/// file stands alone).
pub fn dangling_references(records: &[Record]) -> Vec<String> {
    let mut problems = Vec::new();
    let (mut pods, mut containers, mut processes, mut files) = (
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
    );
    for (i, record) in records.iter().enumerate() {
        let mut missing =
            |what: String| problems.push(format!("record {i} ({}): {what}", record.code()));
        match record {
            Record::Header(_) => {
                pods.clear();
                containers.clear();
                processes.clear();
                files.clear();
            }
            Record::Pod(p) => {
                pods.insert(p.id.clone());
            }
            Record::Container(c) => {
                if let Some(pod) = c.pod_id.as_ref().filter(|p| !pods.contains(*p)) {
                    missing(format!("pod {pod} not written before"));
                }
                containers.insert(c.id.clone());
            }
            Record::Process(p) => {
                if let Some(c) = p.container_id.as_ref().filter(|c| !containers.contains(*c)) {
                    missing(format!("container {c} not written before"));
                }
                if let Some(parent) = p.poid.filter(|o| !processes.contains(o)) {
                    missing(format!("parent pid {} not written before", parent.hpid));
                }
                processes.insert(p.oid);
            }
            Record::File(f) => {
                if let Some(c) = f.container_id.as_ref().filter(|c| !containers.contains(*c)) {
                    missing(format!("container {c} not written before"));
                }
                files.insert(f.oid);
            }
            other => {
                let (proc_oid, file, new_file) = match other {
                    Record::ProcessEvent(e) => (Some(e.proc_oid), None, None),
                    Record::NetworkFlow(e) => (Some(e.proc_oid), None, None),
                    Record::ProcessFlow(e) => (Some(e.proc_oid), None, None),
                    Record::NetworkEvent(e) => (Some(e.proc_oid), None, None),
                    Record::FileFlow(e) => (Some(e.proc_oid), Some(e.file_oid), None),
                    Record::FileEvent(e) => (Some(e.proc_oid), Some(e.file_oid), e.new_file_oid),
                    _ => (None, None, None),
                };
                if let Some(oid) = proc_oid.filter(|o| !processes.contains(o)) {
                    missing(format!("process pid {} not written before", oid.hpid));
                }
                for f in [file, new_file].into_iter().flatten() {
                    if !files.contains(&f) {
                        missing("file not written before".into());
                    }
                }
            }
        }
    }
    problems
}
