//! containerd's Node Resource Interface, plugin side: registration, configuration,
//! synchronization and lifecycle events over NRI's multiplexed ttrpc socket.
//!
//! Like the Go stub of containerd/nri, the framework lives here and the plugin implements only
//! [`NriHandler`]: events arrive both through their dedicated RPCs (NRI >= 0.12) and through
//! `StateChange` (older runtimes such as Debian's containerd 1.7 with NRI 0.6.1), and both reach
//! the same handler. Handlers never fail towards the runtime: an error would fail the pod's
//! creation, so problems are logged and counted instead.

pub mod mux;
pub mod proto;
pub mod stats;

use std::{
    collections::HashMap,
    os::fd::{FromRawFd as _, RawFd},
    path::PathBuf,
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use prost::Message as _;
use tokio::{net::UnixStream, sync::mpsc};
use tracing::{debug, info, warn};
use ttrpc::{
    Code, Request, Response,
    r#async::{
        Client, MethodHandler, Server, Service, TtrpcContext,
        transport::{Listener, Socket},
    },
};

use self::{
    proto::{
        ConfigureRequest, ConfigureResponse, Container, ContainerRequest, Event, PLUGIN_SERVICE,
        PodRequest, PodSandbox, RUNTIME_SERVICE, RegisterPluginRequest, StateChangeEvent,
        SynchronizeRequest, SynchronizeResponse,
    },
    stats::{NriStats, SYNCHRONIZE_SLOT},
};

/// What the plugin does with what the runtime tells it. Called on the runtime's request path:
/// implementations must return quickly and never block on I/O.
pub trait NriHandler: Send + Sync + 'static {
    /// Every pod and container the runtime knows, once per connection (after reassembly of
    /// split messages).
    fn synchronize(&self, pods: Vec<PodSandbox>, containers: Vec<Container>);
    fn pod_event(&self, event: Event, pod: PodSandbox);
    fn container_event(&self, event: Event, pod: Option<PodSandbox>, container: Container);
    /// The connection to the runtime is gone (the runtime will synchronize again on reconnect).
    fn disconnected(&self) {}
}

/// Events we subscribe to: pods come and go, containers start (their cgroup exists, their
/// workload has not run yet) and are removed. Nothing else: the runtime calls every
/// subscribed plugin in turn on the pod's start path.
pub const SUBSCRIBED: [Event; 4] = [
    Event::RunPodSandbox,
    Event::RemovePodSandbox,
    Event::StartContainer,
    Event::RemoveContainer,
];

pub fn subscription_mask() -> i32 {
    SUBSCRIBED.iter().map(|e| e.mask()).fold(0, |a, b| a | b)
}

#[derive(Clone, Debug)]
pub struct NriConfig {
    /// NRI socket of the runtime (external plugin mode).
    pub socket: PathBuf,
    pub plugin_name: String,
    /// Two digits: plugins are called in ascending index order.
    pub plugin_index: String,
}

impl Default for NriConfig {
    fn default() -> Self {
        NriConfig {
            socket: "/var/run/nri/nri.sock".into(),
            plugin_name: "sysflow".into(),
            plugin_index: "10".into(),
        }
    }
}

impl NriConfig {
    /// Checks name and index as the runtime would (it rejects them at registration).
    pub fn validate(&self) -> Result<(), String> {
        let valid_name = !self.plugin_name.is_empty()
            && self
                .plugin_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
        if !valid_name {
            return Err(format!(
                "plugin name {:?} must be non-empty and use only [a-zA-Z0-9_.+-]",
                self.plugin_name
            ));
        }
        if self.plugin_index.len() != 2 || !self.plugin_index.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "plugin index {:?} must be exactly two digits (00-99)",
                self.plugin_index
            ));
        }
        Ok(())
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("registration failed: {0}")]
    Register(String),
    #[error("{0}")]
    Trunk(#[from] mux::MuxError),
    #[error("closing after a malformed message: {0}")]
    Malformed(String),
}

/// State shared by the method handlers of one connection.
struct Shared {
    handler: Arc<dyn NriHandler>,
    stats: Arc<NriStats>,
    /// Chunks of a split Synchronize, until the last one.
    pending_sync: Mutex<(Vec<PodSandbox>, Vec<Container>)>,
    /// A malformed message closes the connection (the runtime resynchronizes on reconnect).
    close: mpsc::UnboundedSender<String>,
}

#[derive(Clone, Copy)]
enum Method {
    Configure,
    Synchronize,
    Shutdown,
    Pod(Event),
    Container(Event),
    StateChange,
    /// Methods we do not subscribe to but answer harmlessly if called.
    Ignored,
}

struct Handler {
    method: Method,
    name: &'static str,
    shared: Arc<Shared>,
}

fn decode<M: prost::Message + Default>(payload: &[u8]) -> Result<M, String> {
    M::decode(payload).map_err(|e| e.to_string())
}

impl Handler {
    /// The response payload; never an error towards the runtime.
    fn dispatch(&self, payload: &[u8]) -> Vec<u8> {
        let s = &self.shared;
        let outcome: Result<Vec<u8>, String> = (|| match self.method {
            Method::Configure => {
                let req: ConfigureRequest = decode(payload)?;
                info!(
                    runtime = %req.runtime_name,
                    version = %req.runtime_version,
                    nri = %req.nri_version,
                    request_timeout_ms = req.request_timeout,
                    "NRI: configured"
                );
                Ok(ConfigureResponse {
                    events: subscription_mask(),
                }
                .encode_to_vec())
            }
            Method::Synchronize => {
                let req: SynchronizeRequest = decode(payload)?;
                s.stats.count_event(SYNCHRONIZE_SLOT);
                let mut pending = s.pending_sync.lock().map_err(|e| e.to_string())?;
                pending.0.extend(req.pods);
                pending.1.extend(req.containers);
                if req.more {
                    // Split synchronization: echo `more`, act on the last chunk.
                    return Ok(SynchronizeResponse { more: true }.encode_to_vec());
                }
                let (pods, containers) = std::mem::take(&mut *pending);
                drop(pending);
                s.stats
                    .synchronized_pods
                    .fetch_add(pods.len() as u64, Relaxed);
                s.stats
                    .synchronized_containers
                    .fetch_add(containers.len() as u64, Relaxed);
                info!(
                    pods = pods.len(),
                    containers = containers.len(),
                    "NRI: synchronized"
                );
                s.handler.synchronize(pods, containers);
                Ok(SynchronizeResponse { more: false }.encode_to_vec())
            }
            Method::Shutdown | Method::Ignored => Ok(Vec::new()),
            Method::Pod(event) => {
                let req: PodRequest = decode(payload)?;
                s.stats.count_event(event as usize);
                let pod = req.pod.ok_or("pod event without a pod")?;
                s.handler.pod_event(event, pod);
                Ok(Vec::new())
            }
            Method::Container(event) => {
                let req: ContainerRequest = decode(payload)?;
                s.stats.count_event(event as usize);
                let container = req.container.ok_or("container event without a container")?;
                s.handler.container_event(event, req.pod, container);
                Ok(Vec::new())
            }
            Method::StateChange => {
                let req: StateChangeEvent = decode(payload)?;
                let event = Event::try_from(req.event).unwrap_or(Event::Unknown);
                s.stats.count_event(event as usize);
                match (event, req.pod, req.container) {
                    (
                        Event::RunPodSandbox | Event::StopPodSandbox | Event::RemovePodSandbox,
                        Some(pod),
                        _,
                    ) => s.handler.pod_event(event, pod),
                    (Event::StartContainer | Event::RemoveContainer, pod, Some(container)) => {
                        s.handler.container_event(event, pod, container)
                    }
                    // Events we did not subscribe to (a runtime may still send them).
                    (other, _, _) => debug!(event = ?other, "NRI: state change ignored"),
                }
                Ok(Vec::new())
            }
        })();
        match outcome {
            Ok(payload) => payload,
            Err(reason) => {
                s.stats.malformed.fetch_add(1, Relaxed);
                let reason = format!("{}: {reason}", self.name);
                warn!("NRI: malformed request, answering empty and reconnecting: {reason}");
                let _ = s.close.send(reason);
                Vec::new()
            }
        }
    }
}

#[async_trait]
impl MethodHandler for Handler {
    async fn handler(&self, _ctx: TtrpcContext, req: Request) -> ttrpc::Result<Response> {
        let started = Instant::now();
        let payload = self.dispatch(&req.payload);
        let mut response = Response::new();
        response.set_status(ttrpc::get_status(Code::OK, ""));
        response.payload = payload;
        let took = started.elapsed();
        self.shared.stats.observe_latency(took);
        if took > SLOW_HANDLER {
            // The runtime waits for us on every pod and container start, node-wide.
            warn!(
                method = self.name,
                took_us = took.as_micros() as u64,
                "NRI: slow handler"
            );
        }
        Ok(response)
    }
}

/// The Plugin service's methods, by their names in api.proto.
fn plugin_methods() -> Vec<(&'static str, Method)> {
    vec![
        ("Configure", Method::Configure),
        ("Synchronize", Method::Synchronize),
        ("Shutdown", Method::Shutdown),
        ("RunPodSandbox", Method::Pod(Event::RunPodSandbox)),
        ("StopPodSandbox", Method::Pod(Event::StopPodSandbox)),
        ("RemovePodSandbox", Method::Pod(Event::RemovePodSandbox)),
        ("UpdatePodSandbox", Method::Ignored),
        ("PostUpdatePodSandbox", Method::Ignored),
        ("CreateContainer", Method::Ignored),
        ("PostCreateContainer", Method::Ignored),
        ("StartContainer", Method::Container(Event::StartContainer)),
        ("PostStartContainer", Method::Ignored),
        ("UpdateContainer", Method::Ignored),
        ("PostUpdateContainer", Method::Ignored),
        ("StopContainer", Method::Ignored),
        ("RemoveContainer", Method::Container(Event::RemoveContainer)),
        ("StateChange", Method::StateChange),
    ]
}

fn plugin_service(shared: Arc<Shared>) -> HashMap<String, Service> {
    let mut methods: HashMap<String, Box<dyn MethodHandler + Send + Sync>> = HashMap::new();
    for (name, method) in plugin_methods() {
        methods.insert(
            name.to_string(),
            Box::new(Handler {
                method,
                name,
                shared: shared.clone(),
            }),
        );
    }
    HashMap::from([(
        PLUGIN_SERVICE.to_string(),
        Service {
            methods,
            streams: HashMap::new(),
        },
    )])
}

/// A ttrpc listener that yields one already-connected stream and then stays open: ttrpc's
/// `Server::shutdown` expects its accept loop to still run (it panics otherwise).
pub fn one_connection<S>(conn: S) -> Listener
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + 'static,
{
    use futures::StreamExt as _;
    Listener::new(
        futures::stream::iter([Ok::<_, std::io::Error>(conn)]).chain(futures::stream::pending()),
    )
}

/// A handler slower than this is logged.
const SLOW_HANDLER: Duration = Duration::from_millis(1);

/// How long we wait for RegisterPlugin's answer (the runtime's registration timeout is 5 s).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one connection until it ends: registers, answers Configure and Synchronize, then
/// handles events. Returns why it ended.
pub async fn serve_connection<S>(
    socket: S,
    config: &NriConfig,
    handler: Arc<dyn NriHandler>,
    stats: Arc<NriStats>,
) -> SessionEnd
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + 'static,
{
    let trunk = mux::start(socket);
    let (close_tx, mut close_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        handler: handler.clone(),
        stats: stats.clone(),
        pending_sync: Mutex::default(),
        close: close_tx,
    });
    let plugin_conn = trunk.plugin;
    let listener = one_connection(plugin_conn);
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(plugin_service(shared));
    if let Err(e) = server.start().await {
        return SessionEnd::Register(format!("cannot serve the Plugin service: {e}"));
    }
    let client = Client::new(Socket::new(trunk.runtime));
    let mut request = Request::new();
    request.service = RUNTIME_SERVICE.into();
    request.method = "RegisterPlugin".into();
    request.timeout_nano = REGISTER_TIMEOUT.as_nanos() as i64;
    request.payload = RegisterPluginRequest {
        plugin_name: config.plugin_name.clone(),
        plugin_idx: config.plugin_index.clone(),
        nri_version: String::new(),
    }
    .encode_to_vec();
    let mut ended = trunk.ended;
    let end = tokio::select! {
        reply = client.request(request) => match reply {
            Ok(r) if r.status.as_ref().is_none_or(|s| s.code() == Code::OK) => None,
            Ok(r) => Some(SessionEnd::Register(format!(
                "runtime refused: {}",
                r.status.as_ref().map(|s| s.message.clone()).unwrap_or_default()
            ))),
            Err(e) => Some(SessionEnd::Register(e.to_string())),
        },
        reason = &mut ended => Some(SessionEnd::Trunk(
            reason.unwrap_or(mux::MuxError::Closed),
        )),
    };
    let end = match end {
        Some(end) => end,
        None => {
            info!(
                name = %config.plugin_name,
                index = %config.plugin_index,
                "NRI: registered"
            );
            stats.connected.store(true, Relaxed);
            stats.connections.fetch_add(1, Relaxed);
            tokio::select! {
                reason = &mut ended => SessionEnd::Trunk(reason.unwrap_or(mux::MuxError::Closed)),
                Some(reason) = close_rx.recv() => {
                    // Let the (successful) reply to the malformed request reach the runtime
                    // first, so it is not reported there as a failed event.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    SessionEnd::Malformed(reason)
                }
            }
        }
    };
    if stats.connected.swap(false, Relaxed) {
        stats.disconnects.fetch_add(1, Relaxed);
    }
    handler.disconnected();
    drop(trunk.guard);
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await;
    end
}

/// The socket containerd passed to a plugin it launched itself (`NRI_PLUGIN_SOCKET`=fd).
pub fn launched_socket() -> Option<Result<UnixStream, String>> {
    let fd = std::env::var("NRI_PLUGIN_SOCKET").ok()?;
    Some((|| {
        let fd: RawFd = fd
            .parse()
            .map_err(|_| format!("NRI_PLUGIN_SOCKET={fd:?} is not a file descriptor number"))?;
        // SAFETY: the runtime hands this descriptor to us alone; nothing else in the process
        // owns it.
        let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        std.set_nonblocking(true)
            .map_err(|e| format!("NRI_PLUGIN_SOCKET={fd}: {e}"))?;
        UnixStream::from_std(std).map_err(|e| format!("NRI_PLUGIN_SOCKET={fd}: {e}"))
    })())
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

/// Connects to the runtime's socket once and serves the connection until it ends.
pub async fn connect_and_serve(
    config: &NriConfig,
    handler: Arc<dyn NriHandler>,
    stats: Arc<NriStats>,
) -> SessionEnd {
    match UnixStream::connect(&config.socket).await {
        Ok(socket) => serve_connection(socket, config, handler, stats).await,
        Err(source) => SessionEnd::Connect {
            path: config.socket.clone(),
            source,
        },
    }
}

#[cfg(test)]
mod tests;
