//! `cargo xtask bench nri`: what the plugin adds to pod start-up on a real containerd 1.7,
//! and how long its NRI handlers take. Same containerd, same run: pods started without any
//! NRI plugin, then with the agent registered (capturing everything). Needs root.
//!
//! Each pod: RunPodSandbox + CreateContainer + StartContainer of a busybox container running
//! `true`, timed from the CRI client. Sequential pods show the per-pod cost; a burst of 20
//! concurrent pods shows it under contention.

use std::time::{Duration, Instant};

use nri_sysflow_e2e::{
    agent::{Agent, AgentOptions},
    containerd::{BUSYBOX_IMAGE, Containerd},
    cri::{Cri, PodSpec},
};

const SEQUENTIAL: usize = 20;
const BURST: usize = 20;
const ROUNDS: usize = 3;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn start_pod(mut cri: Cri, pod: PodSpec) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let sandbox = cri.run_pod(&pod).await?;
    cri.run_container(&sandbox, &pod, "job", BUSYBOX_IMAGE, &["/bin/true"])
        .await?;
    Ok((started.elapsed(), sandbox))
}

/// Start-up times of `n` pods, one after the other or all at once.
async fn measure(c: &Containerd, cri: &mut Cri, tag: &str, n: usize, burst: bool) -> Vec<Duration> {
    let pods: Vec<PodSpec> = (0..n)
        .map(|i| {
            PodSpec::new(
                &format!("{tag}-{i}"),
                "bench",
                &format!("{}/besteffort", c.cgroup_root),
                &c.dir.join("logs"),
            )
        })
        .collect();
    let mut results = Vec::new();
    if burst {
        let tasks: Vec<_> = pods
            .into_iter()
            .map(|p| tokio::spawn(start_pod(cri.clone(), p)))
            .collect();
        for t in tasks {
            results.push(t.await.expect("task").expect("pod starts"));
        }
    } else {
        for p in pods {
            results.push(start_pod(cri.clone(), p).await.expect("pod starts"));
        }
    }
    for (_, sandbox) in &results {
        cri.remove_pod(sandbox).await.expect("pod removed");
    }
    let mut times: Vec<Duration> = results.into_iter().map(|(d, _)| d).collect();
    times.sort();
    times
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("run as root: containerd and the agent need it");
    }
    let c = Containerd::start(true).await?;
    let mut cri = c.cri().await?;
    let work = tempfile::tempdir()?;
    // Warm-up: the first pods pay for image unpacking and cold caches.
    measure(&c, &mut cri, "warm", 3, false).await;

    let mut rows = Vec::new();
    for (mode, burst, n) in [("sequential", false, SEQUENTIAL), ("burst", true, BURST)] {
        let mut without = Vec::new();
        let mut capture_only = Vec::new();
        let mut with = Vec::new();
        let mut handler = Vec::new();
        for round in 0..ROUNDS {
            without.extend(measure(&c, &mut cri, &format!("a{round}{mode}"), n, burst).await);
            // The agent capturing everything but not registered with NRI: what capture costs
            // runc and containerd, apart from the plugin's handlers.
            let standalone = Agent::start(
                &work.path().join(format!("{mode}-{round}-standalone")),
                &work.path().join(format!("{mode}-{round}-standalone.log")),
                &AgentOptions::default(),
            )?;
            capture_only.extend(measure(&c, &mut cri, &format!("c{round}{mode}"), n, burst).await);
            standalone.stop()?;
            let out = work.path().join(format!("{mode}-{round}"));
            let agent = Agent::start(
                &out,
                &work.path().join(format!("{mode}-{round}.log")),
                &AgentOptions {
                    nri_socket: Some(c.nri_socket.clone()),
                    wait_for_nri: true,
                    ..AgentOptions::default()
                },
            )?;
            with.extend(measure(&c, &mut cri, &format!("b{round}{mode}"), n, burst).await);
            let log = agent.stop()?;
            if let Some(line) = log.lines().find(|l| l.contains("handler latency")) {
                handler.push(line.split("nri: ").nth(1).unwrap_or(line).to_string());
            }
        }
        without.sort();
        capture_only.sort();
        with.sort();
        rows.push((mode, n, without, capture_only, with, handler));
    }

    println!(
        "\npod start-up (RunPodSandbox + CreateContainer + StartContainer), containerd 1.7.24, {ROUNDS} rounds\n"
    );
    println!(
        "| pods | no agent p50 / p99 (ms) | agent capturing, no NRI p50 / p99 | agent as NRI plugin p50 / p99 | plugin vs capture-only p50 |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut json = Vec::new();
    for (mode, n, without, capture_only, with, _) in &rows {
        let p = |v: &Vec<Duration>| (percentile(v, 50.0), percentile(v, 99.0));
        let ((a50, a99), (c50, c99), (b50, b99)) = (p(without), p(capture_only), p(with));
        println!(
            "| {n} {mode} | {} / {} | {} / {} | {} / {} | {:.2} |",
            ms(a50),
            ms(a99),
            ms(c50),
            ms(c99),
            ms(b50),
            ms(b99),
            b50.as_secs_f64() / c50.as_secs_f64()
        );
        json.push(format!(
            "\"{mode}\":{{\"no_agent_p50_ms\":{},\"capture_only_p50_ms\":{},\"plugin_p50_ms\":{},\"no_agent_p99_ms\":{},\"capture_only_p99_ms\":{},\"plugin_p99_ms\":{}}}",
            ms(a50),
            ms(c50),
            ms(b50),
            ms(a99),
            ms(c99),
            ms(b99)
        ));
    }
    println!("\nNRI handler latency inside the agent, per round:");
    for (mode, _, _, _, _, handler) in &rows {
        for h in handler {
            println!("  {mode}: {h}");
        }
    }
    println!("{{{}}}", json.join(","));
    Ok(())
}
