//! The framework's side of a plugin's life, as the Go stub owns it: finding the runtime (the
//! socket it handed a plugin it launched, or its NRI socket), registering, serving, and
//! reconnecting with backoff after a connection ends.

use std::{
    os::fd::{FromRawFd as _, RawFd},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::net::UnixStream;
use tracing::info;

use super::{NriConfig, Plugin, SessionEnd, serve_connection, stats::NriStats};

/// A connection that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);

/// The socket a runtime handed over (`NRI_PLUGIN_SOCKET`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("NRI_PLUGIN_SOCKET={0:?} is not a file descriptor number")]
    NotAnFd(String),
    #[error("NRI_PLUGIN_SOCKET={fd}: {source}")]
    Socket { fd: RawFd, source: std::io::Error },
}

pub struct Stub {
    config: NriConfig,
    plugin: Arc<dyn Plugin>,
    stats: Arc<NriStats>,
    backoff: Backoff,
}

impl Stub {
    pub fn new(config: NriConfig, plugin: Arc<dyn Plugin>, stats: Arc<NriStats>) -> Stub {
        Stub {
            config,
            plugin,
            stats,
            backoff: Backoff::default(),
        }
    }

    /// Whether the runtime launched this process as its plugin.
    pub fn launched() -> bool {
        std::env::var_os("NRI_PLUGIN_SOCKET").is_some()
    }

    /// A plugin the runtime launched: serves the connection it handed over, registered under
    /// the name and index it gave, until the runtime closes it (the runtime owns our lifetime).
    pub async fn serve_launched(&self) -> Result<SessionEnd, LaunchError> {
        let socket = launched_socket()?;
        let mut config = self.config.clone();
        if let Ok(name) = std::env::var("NRI_PLUGIN_NAME") {
            config.plugin_name = name;
        }
        if let Ok(index) = std::env::var("NRI_PLUGIN_IDX") {
            config.plugin_index = index;
        }
        Ok(serve_connection(socket, &config, self.plugin.clone(), self.stats.clone()).await)
    }

    /// An external plugin: connects to the runtime's socket, registers and serves; after each
    /// end, reconnects with backoff, for as long as the socket exists. Returns once it does
    /// not (NRI was turned off, or the runtime is gone), with the last connection's end.
    pub async fn run(&mut self) -> Option<SessionEnd> {
        let mut last: Option<SessionEnd> = None;
        let mut last_note = String::new();
        while self.config.socket.exists() {
            let started = Instant::now();
            let end = self.connect_and_serve().await;
            if started.elapsed() >= STABLE {
                self.backoff.reset();
            }
            // Each distinct reason once, not on every retry.
            let note = end.to_string();
            if note != last_note {
                info!("NRI connection ended: {note}; reconnecting");
                last_note = note;
            }
            last = Some(end);
            tokio::time::sleep(self.backoff.next_delay()).await;
        }
        last
    }

    /// Connects once and serves the connection until it ends.
    pub async fn connect_and_serve(&self) -> SessionEnd {
        match UnixStream::connect(&self.config.socket).await {
            Ok(socket) => {
                serve_connection(
                    socket,
                    &self.config,
                    self.plugin.clone(),
                    self.stats.clone(),
                )
                .await
            }
            Err(source) => SessionEnd::Connect {
                path: self.config.socket.clone(),
                source,
            },
        }
    }
}

/// The socket containerd passed to a plugin it launched itself (`NRI_PLUGIN_SOCKET`=fd).
fn launched_socket() -> Result<UnixStream, LaunchError> {
    let value = std::env::var("NRI_PLUGIN_SOCKET").unwrap_or_default();
    let fd: RawFd = value.parse().map_err(|_| LaunchError::NotAnFd(value))?;
    let socket_err = |source| LaunchError::Socket { fd, source };
    // SAFETY: the runtime hands this descriptor to us alone; nothing else in the process owns
    // it, and it is taken once.
    let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    std.set_nonblocking(true).map_err(socket_err)?;
    UnixStream::from_std(std).map_err(socket_err)
}

/// Backoff between connection attempts: 100 ms doubling up to 5 s, reset after a connection
/// that lasted.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}
