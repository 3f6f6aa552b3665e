//! `cargo xtask bench <which>`: builds optimised and runs one benchmark. Each prints its figures
//! side by side with a baseline measured in the same run, and ends with one JSON line.

use std::process::Command;

use crate::cargo;

/// The agent benchmark counts the workload's syscalls with strace.
fn ensure_strace() -> anyhow::Result<()> {
    let present = Command::new("strace")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    crate::run(Command::new("apt-get").arg("update"))?;
    crate::run(Command::new("apt-get").args(["install", "-y", "strace"]))
}

/// The server benchmark runs Debian's PostgreSQL (server and pgbench).
fn ensure_postgresql() -> anyhow::Result<()> {
    let present = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .any(|d| d.path().join("bin/pgbench").exists())
        })
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    crate::run(Command::new("apt-get").arg("update"))?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "postgresql"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Which {
    /// Kernel capture overhead per operation (detached / attached but off / capturing all),
    /// the highest record rate without drops, and one ring vs several.
    Capture,
    /// SysFlow write/read throughput and bytes per record, beside fastavro on the same records.
    Sysflow,
    /// The whole agent under a heavy mixed workload, beside the workload without it.
    Agent,
    /// Pod start-up on a real containerd with and without the NRI plugin, and the plugin's
    /// handler latency.
    Nri,
    /// PostgreSQL under pgbench without the agent, with it capturing everything, and with the
    /// server's cgroup switched off while another cgroup is captured.
    Server,
    /// Detection rules: records evaluated per second on one core with the conformance kit's
    /// rule sets, beside reading and flattening the same records; then the agent benchmark
    /// with the runtime-integrity rules and without rules.
    Rules,
    /// Export: Parquet conversion records/s beside our SysFlow read rate; then the agent
    /// under its workload rotating every 2 s without export and with export to a local
    /// SeaweedFS (SysFlow and Parquet), and its upload throughput for a backlog.
    Export,
    /// Memory as the node gets busy: the idle agent, 100 containers, 10,000 processes, then a
    /// fork storm (RSS per container and per process, peak RSS, tables, drops, /metrics).
    Scale,
    /// The image's static (musl) binary beside the workspace's glibc build, each under the
    /// agent benchmark with the shipped rules, as the DaemonSet runs it: the figures the
    /// DaemonSet's requests and limits come from.
    Image,
}

pub fn run(which: Which) -> anyhow::Result<()> {
    match which {
        Which::Capture => cargo(&["bench", "-p", "nri-sysflow", "--bench", "capture"]),
        Which::Sysflow => cargo(&["bench", "-p", "sysflow", "--bench", "format"]),
        Which::Agent => {
            ensure_strace()?;
            cargo(&["bench", "-p", "nri-sysflow", "--bench", "agent"])
        }
        Which::Server => {
            ensure_postgresql()?;
            cargo(&["bench", "-p", "nri-sysflow", "--bench", "server"])
        }
        Which::Scale => cargo(&["bench", "-p", "nri-sysflow", "--bench", "scale"]),
        Which::Rules => rules(),
        Which::Export => export(),
        Which::Image => image(),
        Which::Nri => {
            cargo(&[
                "build",
                "--release",
                "-p",
                "nri-sysflow",
                "--bin",
                "nri-sysflow",
            ])?;
            let agent = crate::workspace_root()?.join("target/release/nri-sysflow");
            crate::run(
                Command::new("cargo")
                    .arg(format!("+{}", crate::setup::USER_TOOLCHAIN))
                    .args(["bench", "-p", "nri-sysflow-e2e", "--bench", "nri"])
                    .env("NRI_SYSFLOW_BIN", agent),
            )
        }
    }
}

/// Runs a benchmark, echoing its output; its last line (the JSON summary).
fn bench_json(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<serde_json::Value> {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{}", crate::setup::USER_TOOLCHAIN))
        .args(args)
        .envs(env.iter().copied());
    eprintln!("+ {cmd:?}");
    let out = cmd.stderr(std::process::Stdio::inherit()).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    anyhow::ensure!(out.status.success(), "{cmd:?} failed with {}", out.status);
    let last = text.lines().last().unwrap_or_default();
    Ok(serde_json::from_str(last)?)
}

fn rules() -> anyhow::Result<()> {
    ensure_strace()?;
    let engine = bench_json(&["bench", "-p", "sysflow-rules", "--bench", "rules"], &[])?;
    // The 79 runtime-integrity rules of the conformance kit, or the shipped rules without it.
    let root = crate::workspace_root()?;
    let kit_rules = root.join("../shared/policy-kit/policies/runtimeintegrity");
    let rules_path = if kit_rules.is_dir() {
        kit_rules
    } else {
        root.join("deploy/rules")
    };
    let rules_path = rules_path.display().to_string();
    let agent = bench_json(
        &["bench", "-p", "nri-sysflow", "--bench", "agent"],
        &[("NRI_SYSFLOW_BENCH_COMPARE_RULES", &rules_path)],
    )?;
    println!(
        "{}",
        serde_json::json!({
            "bench": "rules",
            "engine": engine,
            "agent": agent,
        })
    );
    Ok(())
}

fn export() -> anyhow::Result<()> {
    ensure_strace()?;
    let parquet = bench_json(
        &["bench", "-p", "sysflow-parquet", "--bench", "convert"],
        &[],
    )?;
    let agent_args = ["bench", "-p", "nri-sysflow", "--bench", "agent"];
    let rotate = ("NRI_SYSFLOW_BENCH_ROTATE", "2");
    let export = |formats| {
        bench_json(
            &agent_args,
            &[rotate, ("NRI_SYSFLOW_BENCH_EXPORT", formats)],
        )
    };
    let off = export("")?;
    let sysflow = export("sysflow")?;
    let on = export("sysflow,parquet")?;
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!();
    println!(
        "{:<32} {:>11} {:>11} {:>7} {:>16} {:>7}",
        "agent, rotating every 2 s", "export off", "SysFlow", "ratio", "SysFlow+Parquet", "ratio"
    );
    for (label, key) in [
        ("agent CPU (s)", "agent_cpu_s"),
        ("us per SysFlow record", "agent_us_per_sysflow_record"),
        ("peak RSS (MiB)", "agent_peak_rss_mib"),
        ("SysFlow records in the window", "sysflow_records_in_window"),
    ] {
        let (a, b, c) = (f(&off, key), f(&sysflow, key), f(&on, key));
        println!(
            "{label:<32} {a:>11.2} {b:>11.2} {:>7.3} {c:>16.2} {:>7.3}",
            b / a,
            c / a
        );
    }
    println!(
        "{:<36} {:>14.0} records/s (read + flatten alone: {:.0})",
        "Parquet conversion, one core",
        f(&parquet, "parquet_records_per_s"),
        f(&parquet, "read_flatten_records_per_s")
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "export",
            "parquet": parquet,
            "agent_export_off": off,
            "agent_export_sysflow": sysflow,
            "agent_export_sysflow_parquet": on,
            "agent_cpu_ratio_sysflow_off": f(&sysflow, "agent_cpu_s") / f(&off, "agent_cpu_s"),
            "agent_cpu_ratio_sysflow_parquet_off": f(&on, "agent_cpu_s") / f(&off, "agent_cpu_s"),
            "upload": sysflow["export_upload"],
        })
    );
    Ok(())
}

fn image() -> anyhow::Result<()> {
    ensure_strace()?;
    let root = crate::workspace_root()?;
    let archive = root.join(crate::image::DEFAULT_OUT);
    crate::image::build(&root, &archive)?;
    // The binary exactly as the image holds it, with the image's environment.
    let read = oci_archive::read(&archive)?;
    let image_env: Vec<(String, String)> = read
        .config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k != "PATH")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let files = read.files()?;
    let (_, binary) = files
        .get("usr/bin/nri-sysflow")
        .ok_or_else(|| anyhow::anyhow!("{}: no usr/bin/nri-sysflow", archive.display()))?;
    let image_binary = root.join("target/oci/nri-sysflow.from-image");
    std::fs::write(&image_binary, binary)?;
    std::fs::set_permissions(
        &image_binary,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let image_binary = image_binary.display().to_string();
    let rules = root.join("deploy/rules").display().to_string();
    let agent_args = ["bench", "-p", "nri-sysflow", "--bench", "agent"];
    let glibc = bench_json(&agent_args, &[("NRI_SYSFLOW_BENCH_RULES", &rules)])?;
    let mut env = vec![
        ("NRI_SYSFLOW_BENCH_RULES", rules.as_str()),
        ("NRI_SYSFLOW_BENCH_AGENT", image_binary.as_str()),
    ];
    env.extend(image_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let musl = bench_json(&agent_args, &env)?;
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let core_share = |v: &serde_json::Value| {
        f(v, "agent_cpu_s")
            / v["workload_busy_s"]["with_agent"]
                .as_f64()
                .unwrap_or(f64::NAN)
    };
    println!();
    println!(
        "{:<36} {:>14} {:>14} {:>9}",
        "agent + shipped rules, mixed load", "glibc build", "image (musl)", "ratio"
    );
    for (label, a, b) in [
        (
            "agent CPU (s)",
            f(&glibc, "agent_cpu_s"),
            f(&musl, "agent_cpu_s"),
        ),
        (
            "share of one core while loaded",
            core_share(&glibc),
            core_share(&musl),
        ),
        (
            "us per kernel record",
            f(&glibc, "agent_us_per_kernel_record"),
            f(&musl, "agent_us_per_kernel_record"),
        ),
        (
            "peak RSS (MiB)",
            f(&glibc, "agent_peak_rss_mib"),
            f(&musl, "agent_peak_rss_mib"),
        ),
        (
            "kernel drops",
            f(&glibc, "kernel_drops"),
            f(&musl, "kernel_drops"),
        ),
    ] {
        println!("{label:<36} {a:>14.2} {b:>14.2} {:>9.3}", b / a);
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "image",
            "glibc": glibc,
            "image": musl,
            "image_core_share": core_share(&musl),
            "image_peak_rss_mib": f(&musl, "agent_peak_rss_mib"),
        })
    );
    Ok(())
}
