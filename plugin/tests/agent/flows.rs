//! Flow reporting over a whole run: flow intervals, rotation, per-cgroup capture modes,
//! process flows and shutdown.

use super::*;

#[test]
fn a_long_lived_descriptor_is_reported_every_flow_interval() {
    let agent = Agent::start(&["--flow-interval", "2"]);
    let cgroup = TestCgroup::new("agent-interval");
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("held.bin");
    let mut child = cgroup
        .workload(&["hold-file", path.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // Past at least one flow interval before the second write.
    std::thread::sleep(Duration::from_millis(4500));
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    let stopped = agent.stop();
    let files = std::mem::take(&mut stopped.files.clone());
    assert_files_stand_alone(&files);
    let flows: Vec<Json> = ours_json(&files)
        .into_iter()
        .filter(|r| {
            r["type"] == "FF"
                && r["proc"]["pid"] == pid
                && r["file"]["path"] == path.to_str().unwrap()
        })
        .collect();
    let related: Vec<String> = ours_json(&files)
        .iter()
        .filter(|r| r.to_string().contains("held.bin") && r["type"] != "PE")
        .map(|r| {
            format!(
                "{} {} pid={} fd={} w={} ts={}",
                r["type"],
                r["opflags"],
                r["proc"]["pid"],
                r["file"]["fd"],
                r["flow"]["wbytes"],
                r["ts_uts"]
            )
        })
        .collect();
    assert_eq!(
        flows.len(),
        2,
        "{}\n{related:#?}\n{:?}",
        stopped.log,
        flows
            .iter()
            .map(|f| (
                f["opflags"].clone(),
                f["flow"]["wbytes"].clone(),
                f["ts_uts"].clone(),
                f["endts_uts"].clone()
            ))
            .collect::<Vec<_>>()
    );
    let sum = |k: &str| {
        flows
            .iter()
            .map(|f| f["flow"][k].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!((sum("wbytes"), sum("wops")), (300, 2));
    assert_eq!(flows[0]["flow"]["wbytes"], 100);
    assert_eq!(
        flows[0]["opflags_bitmap"].as_i64(),
        Some((op::OPEN | op::WRITE_SEND) as i64)
    );
    // The second part ends at exit: the descriptor was never closed.
    assert_eq!(
        flows[1]["opflags_bitmap"].as_i64(),
        Some((op::WRITE_SEND | op::TRUNCATE) as i64)
    );
    assert!(flows[1]["ts_uts"].as_i64() >= flows[0]["endts_uts"].as_i64());
}

#[test]
fn rotation_under_load_keeps_every_reference_resolvable() {
    let agent = Agent::start(&["--rotate", "1", "--flow-interval", "1"]);
    let cgroup = TestCgroup::new("agent-rotate");
    // A descriptor held open across every rotation: its flows are reported in several files.
    let work = tempfile::tempdir().unwrap();
    let held = work.path().join("held.bin");
    let mut holder = cgroup
        .workload(&["hold-file", held.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // Load spread over several rotation periods.
    for _ in 0..4 {
        let mut loops: Vec<Child> = (0..2)
            .map(|_| {
                cgroup
                    .workload(&["loop-open", "/etc/hostname", "10000"])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in &mut loops {
            assert!(c.wait().unwrap().success());
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(holder.wait().unwrap().success());
    let stopped = agent.stop();
    assert_eq!(
        stopped.ring_drops, 0,
        "the agent could not keep up: the count below would be off"
    );
    let files = stopped.files;
    assert!(files.len() >= 3, "{files:?}");
    assert_files_stand_alone(&files);
    // Entities referred to after a rotation were re-emitted (REUP) in the new file.
    let reup: usize = files
        .iter()
        .skip(1)
        .map(|f| {
            read_records(f)
                .iter()
                .filter(
                    |r| matches!(r, Record::Process(p) if p.state == sysflow::SfObjectState::Reup),
                )
                .count()
        })
        .sum();
    assert!(reup > 0);
    let hostname_flows = ours_json(&files)
        .iter()
        .filter(|r| r["type"] == "FF" && r["file"]["path"] == "/etc/hostname")
        .count();
    // Every open/close of the loops is one flow, none lost across the rotations.
    assert_eq!(hostname_flows, 80_000);
}

/// Runs `nri-sysflow run ARGS`, expects exit code 1 and one line on stderr; returns it.
#[test]
fn a_cgroup_switched_off_in_the_config_yields_nothing() {
    let off = TestCgroup::new("agent-cfg-off");
    let on = TestCgroup::new("agent-cfg-on");
    let mount =
        nri_sysflow::host::cgroup::cgroup2_mount(Path::new("/proc/self/mountinfo")).unwrap();
    let relative = off.path.strip_prefix(&mount).unwrap().display().to_string();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!("capture:\n  cgroups:\n    {relative}: off\n"),
    )
    .unwrap();
    let agent = Agent::start(&["--config", config.path().to_str().unwrap()]);
    let work = tempfile::tempdir().unwrap();
    let (off_file, on_file) = (work.path().join("off.bin"), work.path().join("on.bin"));
    let off_pid = {
        let mut child = off
            .workload(&["write-file", off_file.to_str().unwrap()])
            .spawn()
            .unwrap();
        assert!(child.wait().unwrap().success());
        child.id()
    };
    let status = on
        .workload(&["write-file", on_file.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = agent.stop();
    let records = ours_json(&stopped.files);
    // Its fork happened in the (captured) test process; nothing after it moved.
    let of_pid: Vec<&Json> = records
        .iter()
        .filter(|r| r["proc"]["pid"] == off_pid && r["opflags"] != "CLONE")
        .collect();
    assert_eq!(
        of_pid,
        Vec::<&Json>::new(),
        "records of the switched-off cgroup"
    );
    let written: Vec<i64> = records
        .iter()
        .filter(|r| r["type"] == "FF" && r["file"]["path"] == on_file.to_str().unwrap())
        .map(|r| r["flow"]["wbytes"].as_i64().unwrap())
        .collect();
    assert_eq!(written, vec![300], "the other cgroup is captured");

    // A cgroup that does not exist is a start-up error naming it.
    std::fs::write(
        config.path(),
        "capture:\n  cgroups:\n    nri-sysflow-no-such-cgroup: all\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = start_error(&[
        "--config",
        config.path().to_str().unwrap(),
        "--no-nri",
        "--output",
        dir.path().to_str().unwrap(),
        "--metrics-addr",
        "off",
    ]);
    assert!(
        err.starts_with("nri-sysflow: capture.cgroups: nri-sysflow-no-such-cgroup:"),
        "{err}"
    );
}

#[test]
fn process_flows_fold_threads_and_shutdown_truncates_open_flows() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "flows:\n  process_flows: true\n").unwrap();
    let agent = Agent::start(&["--config", config.path().to_str().unwrap()]);
    let cgroup = TestCgroup::new("agent-pf");
    let status = cgroup.workload(&["fork-thread"]).status().unwrap();
    assert!(status.success());
    // Still writing through an open descriptor when the agent stops.
    let work = tempfile::tempdir().unwrap();
    let held = work.path().join("open-at-stop.bin");
    let mut holder = cgroup
        .workload(&["hold-file", held.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let holder_pid = holder.id();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let stopped = agent.stop();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_files_stand_alone(&stopped.files);
    let records = ours_json(&stopped.files);
    let forker = records
        .iter()
        .find(|r| r["type"] == "PE" && r["opflags"] == "EXEC" && r["proc"]["args"] == "fork-thread")
        .expect("exec of the workload")["proc"]["pid"]
        .clone();
    let pf: Vec<&Json> = records
        .iter()
        .filter(|r| r["type"] == "PF" && r["proc"]["pid"] == forker)
        .collect();
    assert_eq!(pf.len(), 1, "{pf:#?}");
    assert_eq!(
        (
            pf[0]["pf"]["nthreads"].as_i64(),
            pf[0]["pf"]["nexits"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(pf[0]["opflags"], "CLONEEXIT");
    // The thread clone is folded; the process clone (fork) is still an event (the one with
    // the child's pid; the other CLONE under this pid is the workload's own birth, ret 0).
    assert_eq!(
        records
            .iter()
            .filter(|r| r["type"] == "PE"
                && r["opflags"] == "CLONE"
                && r["proc"]["pid"] == forker
                && r["ret"] != 0)
            .count(),
        1
    );
    let open: Vec<&Json> = records
        .iter()
        .filter(|r| {
            r["type"] == "FF"
                && r["proc"]["pid"] == holder_pid
                && r["file"]["path"] == held.to_str().unwrap()
        })
        .collect();
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(
        open[0]["opflags_bitmap"].as_i64(),
        Some((op::OPEN | op::WRITE_SEND | op::TRUNCATE) as i64)
    );
    assert_eq!(open[0]["flow"]["wbytes"], 100);
}
