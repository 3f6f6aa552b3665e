//! The `nri-sysflow` command.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use nri_sysflow::{
    agent::{self, config::AgentConfig},
    print::{self, Format},
    probe::{Probe, ProbeConfig},
};

/// The static (musl) build's allocator; the glibc build keeps glibc's (see plugin/Cargo.toml).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "nri-sysflow",
    version,
    about = "Container telemetry agent writing SysFlow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file: every problem with its line and column.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Compile detection rules (files, or folders of .yaml/.yml compiled together in lexical
    /// order) and report what they hold and what is probably a mistake, with file:line:column.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Exit 2 when there are warnings.
        #[arg(long)]
        strict: bool,
    },
    /// Evaluate detection rules over SysFlow files, in file order, to stdout.
    Run {
        /// Rules file or folder.
        #[arg(long = "policy", required = true)]
        policy: Vec<PathBuf>,
        /// alert: only records a rule matched; enrich: every record no filter dropped.
        #[arg(long, default_value = "alert")]
        mode: sysflow_rules::engine::Mode,
        /// json (sf-processor's encoding) or tsv.
        #[arg(long, default_value = "json")]
        format: sysflow_rules::runner::Format,
        /// SysFlow files, or folders of them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing the run flags would only add noise"
)]
#[derive(Subcommand)]
enum Command {
    /// Capture and write SysFlow files (standalone: everything on the host, containers
    /// recognised from cgroup paths).
    Run {
        /// Directory for the .sf files.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Stop after this many seconds (default: until SIGINT/SIGTERM).
        #[arg(long)]
        duration: Option<u64>,
        /// Start a new file every this many seconds (default 300).
        #[arg(long)]
        rotate: Option<u64>,
        /// Report long-lived flows every this many seconds (default 30).
        #[arg(long)]
        flow_interval: Option<u64>,
        /// YAML configuration file (flags override it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// No runtime metadata: neither NRI nor containerd's API (standalone capture).
        #[arg(long)]
        no_nri: bool,
        /// Capture policy file (see deploy/policy.yaml).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// containerd's NRI socket (default /var/run/nri/nri.sock).
        #[arg(long)]
        nri_socket: Option<PathBuf>,
        /// containerd's API socket, used when NRI is off (default /run/containerd/containerd.sock).
        #[arg(long)]
        containerd_socket: Option<PathBuf>,
        /// Serve Prometheus metrics here (default 127.0.0.1:9464; `off` to not serve them).
        #[arg(long)]
        metrics_addr: Option<String>,
        /// Syscall hooks: auto, dispatcher or tracepoint (overrides kernel.hooks).
        #[arg(long, env = "NRI_SYSFLOW_KERNEL_HOOKS")]
        hooks: Option<nri_sysflow::probe::HookChoice>,
        /// Detection rules (sf-processor's policy language): a file, or a folder of them;
        /// repeatable. Alerts go to alerts-*.jsonl in the output folder.
        #[arg(long)]
        rules: Vec<PathBuf>,
        /// `-`: also write each alert to stdout.
        #[arg(long, value_parser = parse_alerts_target)]
        alerts: Option<AlertsTarget>,
        /// Upload completed files to s3://BUCKET[/PREFIX] (overrides export.url).
        #[arg(long)]
        export: Option<String>,
        /// The S3-compatible store's address, e.g. http://127.0.0.1:8333 (overrides
        /// export.endpoint).
        #[arg(long)]
        s3_endpoint: Option<String>,
        /// Log format: auto (JSON lines when stderr is not a terminal), json or text.
        #[arg(
            long,
            value_enum,
            env = "NRI_SYSFLOW_LOG_FORMAT",
            default_value = "auto"
        )]
        log_format: LogFormat,
    },
    /// Capture policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Detection rules (sf-processor's policy language).
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Show what the agent records of a command line: secrets replaced by <redacted>, then
    /// how many each pattern replaced (`capture.redact_args` and `redact_flags` of --config).
    RedactCheck {
        /// Agent config whose `capture.redact_*` settings apply (default: the defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The program and its arguments, as they would be run.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Print SysFlow files the way sysprint does: one line per event or flow, joined with its
    /// process, container, pod and files.
    Print {
        /// str (table), json (sysprint's fields) or csv.
        #[arg(long, default_value = "str")]
        format: Format,
        /// Only these record types, e.g. PE,FF,NF.
        #[arg(long = "type", value_parser = print::parse_types)]
        types: Option<print::TypeList>,
        /// Files, or directories of .sf files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Convert SysFlow files for SQL engines: one Parquet file per input, one row per event
    /// and flow with sysprint's flat fields as columns (`proc.exe` -> `proc_exe`).
    Convert {
        /// The target format (parquet).
        #[arg(long = "to")]
        to: nri_sysflow::convert::Target,
        /// Files or directories of .sf files, then the output directory.
        #[arg(required = true, num_args = 2.., value_name = "IN... OUT_DIR")]
        paths: Vec<PathBuf>,
    },
    /// Print the kernel records the probe captures, one JSON object per line (for debugging the
    /// capture itself; `run` writes SysFlow).
    Trace {
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
        /// Only records of this cgroup v2 id.
        #[arg(long)]
        cgroup_id: Option<u64>,
    },
}

/// Where `--alerts` sends alerts besides the alert files.
#[derive(Clone, Copy, Debug)]
enum AlertsTarget {
    Stdout,
}

fn parse_alerts_target(s: &str) -> Result<AlertsTarget, String> {
    match s {
        "-" => Ok(AlertsTarget::Stdout),
        other => Err(format!(
            "{other:?}: only `-` (stdout) is accepted; alert files always go to the output folder"
        )),
    }
}

/// The error and its causes on one line, each cause once: our errors already name their
/// cause, so a cause whose text is in the line so far is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(real_main()),
        Err(e) => Err(e.into()),
    };
    // Errors are one line each: what went wrong and where.
    if let Err(e) = result {
        eprintln!("nri-sysflow: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// How the log is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// JSON lines when stderr is not a terminal (a pod's log), text on a terminal.
    Auto,
    Json,
    Text,
}

fn init_logging(format: LogFormat) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => log.json().init(),
        LogFormat::Auto if !terminal => log.json().init(),
        _ => log.with_ansi(terminal).init(),
    }
}

async fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The agent's log is read by machines where it runs as a pod; the tools' by people.
    init_logging(match &cli.command {
        Command::Run { log_format, .. } => *log_format,
        _ => LogFormat::Text,
    });
    match cli.command {
        Command::Run {
            output,
            duration,
            rotate,
            flow_interval,
            config,
            no_nri,
            policy,
            nri_socket,
            containerd_socket,
            metrics_addr,
            hooks,
            rules,
            alerts,
            export,
            s3_endpoint,
            log_format: _,
        } => {
            let mut cfg = match &config {
                Some(path) => AgentConfig::load(path)?,
                None => AgentConfig::default(),
            };
            if let Some(dir) = output {
                cfg.output.dir = dir;
            }
            if let Some(secs) = rotate {
                cfg.output.rotate_secs = secs;
            }
            if let Some(secs) = flow_interval {
                cfg.flows.interval_secs = secs;
            }
            if policy.is_some() {
                cfg.capture.policy = policy;
            }
            if let Some(socket) = nri_socket {
                cfg.runtime.nri_socket = socket;
            }
            if let Some(socket) = containerd_socket {
                cfg.runtime.containerd_socket = Some(socket);
            }
            match metrics_addr.as_deref() {
                None => {}
                Some("off") => cfg.metrics.addr = None,
                Some(addr) => {
                    cfg.metrics.addr = Some(addr.parse().with_context(|| {
                        format!("--metrics-addr {addr:?} is not an address like 127.0.0.1:9464")
                    })?)
                }
            }
            if let Some(hooks) = hooks {
                cfg.kernel.hooks = hooks;
            }
            if !rules.is_empty() {
                cfg.detection.rules = rules;
            }
            if let Some(AlertsTarget::Stdout) = alerts {
                cfg.detection.alerts_stdout = true;
            }
            if export.is_some() {
                cfg.export.url = export;
            }
            if s3_endpoint.is_some() {
                cfg.export.endpoint = s3_endpoint;
            }
            if no_nri {
                cfg.runtime.nri = false;
                cfg.runtime.containerd_socket = None;
            }
            cfg.validate(
                config
                    .as_deref()
                    .unwrap_or(std::path::Path::new("command line")),
            )?;
            let summary = agent::run(cfg, duration.map(Duration::from_secs)).await?;
            eprintln!(
                "nri-sysflow: {} kernel records, {} SysFlow records written, {} lost to output errors, {} ring drops, peak RSS {:.1} MiB, last file {}",
                summary.kernel_records,
                summary.records_written,
                summary.records_lost,
                summary.ring_drops,
                summary.peak_rss_mib,
                summary
                    .last_file
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
            if let Some(nri) = summary.nri {
                eprintln!("nri-sysflow: {nri}");
            }
            if summary.late_registrations > 0 {
                eprintln!(
                    "nri-sysflow: {} containers registered after their first process ran (containerd API fallback)",
                    summary.late_registrations
                );
            }
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => match nri_sysflow::policy::Policy::load(&file) {
            Ok(p) => {
                println!("{}: valid, {} rules", file.display(), p.rule_count());
                Ok(())
            }
            Err(errors) => {
                eprintln!("{errors}");
                std::process::exit(1);
            }
        },
        Command::Rules {
            command: RulesCommand::Check { paths, strict },
        } => {
            let policy = nri_sysflow::detection::cli::check(&paths)?;
            if strict && !policy.lints.is_empty() {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Rules {
            command:
                RulesCommand::Run {
                    policy,
                    mode,
                    format,
                    files,
                },
        } => nri_sysflow::detection::cli::run(&policy, mode, format, &files),
        Command::RedactCheck { config, command } => {
            let config = match config {
                Some(path) => AgentConfig::load(&path)?,
                None => AgentConfig::default(),
            };
            let redactor = nri_sysflow::redact::ArgRedactor::new(
                config.capture.redact_args,
                &config.capture.redact_flags,
            );
            let Some((program, args)) = command.split_first() else {
                anyhow::bail!("redact-check: no command given");
            };
            let mut args = args.to_vec();
            let mut counts = nri_sysflow::redact::RedactionCounts::default();
            redactor.redact(program, &mut args, &mut counts);
            println!("{program} {}", args.join(" "));
            for (pattern, n) in nri_sysflow::redact::PATTERNS.iter().zip(counts) {
                if n > 0 {
                    println!("{pattern}: {n}");
                }
            }
            Ok(())
        }
        Command::Print {
            format,
            types,
            paths,
        } => print_files(&paths, format, types.as_ref().map(|t| t.0.as_slice())),
        Command::Convert { to, mut paths } => {
            let nri_sysflow::convert::Target::Parquet = to;
            let out_dir = paths.pop().unwrap_or_default();
            let summary = nri_sysflow::convert::convert(&paths, &out_dir, &mut std::io::stdout())
                .with_context(|| format!("converting into {}", out_dir.display()))?;
            for problem in &summary.problems {
                eprintln!("nri-sysflow convert: {problem}");
            }
            eprintln!(
                "nri-sysflow convert: {} files, {} rows",
                summary.files, summary.rows
            );
            anyhow::ensure!(
                summary.problems.is_empty(),
                "{} of the inputs had problems",
                summary.problems.len()
            );
            Ok(())
        }
        Command::Trace {
            duration,
            cgroup_id,
        } => trace(duration, cgroup_id).await,
    }
}

async fn trace(duration: Option<u64>, cgroup_id: Option<u64>) -> anyhow::Result<()> {
    let mut probe = Probe::load(&ProbeConfig::default()).context("cannot start the probe")?;
    let mut records = probe.records(Default::default())?;
    let deadline = tokio::time::sleep(Duration::from_secs(duration.unwrap_or(u64::MAX / 4)));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => break,
            record = records.recv() => {
                let Some(record) = record else { break };
                if cgroup_id.is_some_and(|id| id != record.common().cgroup_id) {
                    continue;
                }
                println!("{}", serde_json::to_string(&record)?);
            }
        }
    }
    eprintln!("{}", serde_json::to_string(&probe.kernel_stats()?)?);
    Ok(())
}

fn print_files(paths: &[PathBuf], format: Format, types: Option<&[String]>) -> anyhow::Result<()> {
    let files = print::expand(paths).context("listing input files")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let summary = match print::print(&files, format, types, &mut out) {
        Ok(s) => s,
        // Output closed early (e.g. piped into head): not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    drop(out);
    for e in &summary.errors {
        eprintln!("nri-sysflow print: {e}");
    }
    if !summary.errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
