//! The per-workload metrics sink: counts every SysFlow record into its container's series
//! (labels namespace, pod, container), so the metrics agree with the `.sf` files. Labels come
//! from the container and pod entities; a container known only from its cgroup path is
//! labelled with its short id until the runtime names it. A forgotten container's series go
//! after a grace period (a scrape in between still sees their last values).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::Sink;
use crate::{
    flows::Item,
    metrics::workload::{WorkloadLabels, WorkloadSeries},
    state::{Entity, Forget, UNKNOWN_CONTAINER},
};

pub struct MetricsSink {
    series: WorkloadSeries,
    /// Labels of containers the runtime named.
    labels: HashMap<String, WorkloadLabels>,
    /// Pods by id: (namespace, name).
    pods: HashMap<String, (String, String)>,
    /// Forgotten containers whose series go at `Instant`.
    expiry: Vec<(Instant, String)>,
    grace: Duration,
    /// The last tick's time.
    now: Instant,
}

impl MetricsSink {
    pub fn new(series: WorkloadSeries, grace: Duration) -> Self {
        MetricsSink {
            series,
            labels: HashMap::new(),
            pods: HashMap::new(),
            expiry: Vec::new(),
            grace,
            now: Instant::now(),
        }
    }

    fn container_named(&mut self, c: &sysflow::Container) {
        if c.name == UNKNOWN_CONTAINER {
            return;
        }
        let (namespace, pod) = c
            .pod_id
            .as_ref()
            .and_then(|id| self.pods.get(id))
            .cloned()
            .unwrap_or_default();
        let labels = WorkloadLabels {
            namespace,
            pod,
            container: c.name.clone(),
        };
        if self.labels.get(&c.id) != Some(&labels) {
            // The series under the old labels (e.g. a bare container id) go.
            self.series.relabel(&c.id);
            self.labels.insert(c.id.clone(), labels);
        }
    }
}

/// The series labels of a container (None: the host, all labels empty).
fn labels_of(known: &HashMap<String, WorkloadLabels>, container: Option<&str>) -> WorkloadLabels {
    match container {
        None => WorkloadLabels::default(),
        Some(id) => known.get(id).cloned().unwrap_or_else(|| WorkloadLabels {
            // Known by cgroup path only: its short id.
            container: id.chars().take(12).collect(),
            ..WorkloadLabels::default()
        }),
    }
}

impl Sink for MetricsSink {
    fn consume(&mut self, items: &[Item]) {
        for item in items {
            match item {
                Item::Record { record, container } => {
                    let known = &self.labels;
                    self.series
                        .of(container.as_deref(), || {
                            labels_of(known, container.as_deref())
                        })
                        .observe(record);
                }
                Item::OpenFailed { container } => {
                    let known = &self.labels;
                    self.series
                        .of(container.as_deref(), || {
                            labels_of(known, container.as_deref())
                        })
                        .open_failed();
                }
                Item::LiveProcesses(live) => {
                    let counts: HashMap<Option<&str>, i64> =
                        live.iter().map(|(c, n)| (c.as_deref(), *n)).collect();
                    let known = &self.labels;
                    self.series.set_active(&counts, |c| labels_of(known, c));
                }
                Item::Entity(Entity::Pod(p)) => {
                    self.pods
                        .insert(p.id.clone(), (p.namespace.clone(), p.name.clone()));
                }
                Item::Entity(Entity::Container(c)) => self.container_named(c),
                Item::Forget(Forget::Container(id)) => {
                    self.expiry.push((self.now + self.grace, id.clone()));
                }
                Item::Forget(Forget::Pod(id)) => {
                    self.pods.remove(id);
                }
                Item::Entity(_) | Item::Forget(_) => {}
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        self.now = now;
        let (series, labels) = (&mut self.series, &mut self.labels);
        self.expiry.retain(|(due, id)| {
            if *due > now {
                return true;
            }
            series.remove(id);
            labels.remove(id);
            false
        });
    }
}
