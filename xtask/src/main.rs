//! `cargo xtask`: everything that is not plain cargo. It builds with whatever stable toolchain
//! the machine has; `setup` installs the pinned ones and every other command builds the project
//! with them (`cargo +<pinned>`), so a fresh machine needs nothing but rustup.

mod bench;
mod fuzz;
mod image;
mod layout;
mod setup;
mod test;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: pinned toolchains, rust-src, bpf-linker.
    Setup,
    /// Build the agent (release) and run it with the given arguments, as root.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, check formatting and lints, and run every test (needs root).
    Test {
        /// The fast tier: formatting, lints and the tests that need neither root nor the eBPF
        /// toolchain (the agent is built with an empty eBPF object).
        #[arg(long)]
        quick: bool,
    },
    /// The agent's OCI image archive (a static musl build, CA certificates, an SBOM), built
    /// without a container engine; prints its digest.
    Image {
        #[arg(long, default_value = image::DEFAULT_OUT)]
        out: std::path::PathBuf,
    },
    /// Check the source layout: no import cycle between the agent's modules, no overlong file.
    Layout,
    /// Fuzz the SysFlow reader for a bounded time.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// The Spark job over an exported archive (analytics/summarize.py) on a local Spark
    /// (`local[*]`), with the test venv's PySpark and Debian's Java 17; arguments go to the job
    /// (`--bucket B --endpoint URL --out FILE`, see its --help).
    Analytics {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks; each prints a table and ends with one JSON line.
    Bench {
        #[arg(value_enum)]
        which: bench::Which,
    },
}

fn main() -> anyhow::Result<()> {
    if let Some(code) = image::rustc_wrapper() {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match cli.command {
        Task::Setup => setup::run(),
        Task::Run { args } => {
            setup::run()?;
            cargo(&[
                "build",
                "--release",
                "-p",
                "nri-sysflow",
                "--bin",
                "nri-sysflow",
            ])?;
            let status = Command::new(root.join("target/release/nri-sysflow"))
                .args(&args)
                .status()
                .context("starting nri-sysflow")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test { quick: true } => {
            setup::user_toolchain()?;
            test::run_quick(&root)
        }
        Task::Test { quick: false } => {
            setup::run()?;
            test::run_all(&root)
        }
        Task::Image { out } => {
            setup::run()?;
            image::build(&root, &root.join(out))
        }
        Task::Layout => layout::check(&root),
        Task::Fuzz { seconds } => {
            setup::run()?;
            fuzz::run_for(seconds)
        }
        Task::Analytics { args } => {
            setup::run()?;
            let python = setup::venv_dir()?.join("bin/python");
            let status = Command::new(python)
                .arg(root.join("analytics/summarize.py"))
                .args(&args)
                .status()
                .context("starting the analytics job")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Bench { which } => {
            setup::run()?;
            bench::run(which)
        }
    }
}

pub fn workspace_root() -> anyhow::Result<std::path::PathBuf> {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

/// Runs `cargo +<user-space toolchain> args...` and fails on a non-zero exit.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let toolchain = format!("+{}", setup::USER_TOOLCHAIN);
    run(Command::new("cargo").arg(toolchain).args(args))
}

pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
