//! containerd's Node Resource Interface, plugin side: registration, configuration,
//! synchronization and lifecycle events over NRI's multiplexed ttrpc socket.
//!
//! Like the Go stub of containerd/nri, the framework lives here ([`Stub`]: connection,
//! registration, reconnect) and a plugin implements only the handlers it needs ([`Plugin`]):
//! events arrive both through their dedicated RPCs (NRI >= 0.12) and through `StateChange`
//! (older runtimes such as Debian's containerd 1.7 with NRI 0.6.1), and both reach the same
//! handler. Handlers never fail towards the runtime: an error would fail the pod's creation,
//! so problems are logged and counted instead.

pub mod mux;
mod plugin;
pub mod proto;
pub mod stats;
mod stub;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use prost::Message as _;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use ttrpc::{
    Code, Request, Response,
    r#async::{
        Client, MethodHandler, Server, Service, TtrpcContext,
        transport::{Listener, Socket},
    },
};

pub use self::{
    plugin::{EventMask, Plugin},
    stub::{Backoff, LaunchError, Stub},
};
use self::{
    plugin::{deliver_container, deliver_pod},
    proto::{
        ConfigureRequest, ConfigureResponse, Container, ContainerRequest, Event, PLUGIN_SERVICE,
        PodRequest, PodSandbox, RUNTIME_SERVICE, RegisterPluginRequest, StateChangeEvent,
        SynchronizeRequest, SynchronizeResponse,
    },
    stats::{NriStats, SYNCHRONIZE_SLOT},
};

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

/// A plugin name or index the runtime would refuse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidPluginId {
    #[error("plugin name {0:?} must be non-empty and use only [a-zA-Z0-9_.+-]")]
    Name(String),
    #[error("plugin index {0:?} must be exactly two digits (00-99)")]
    Index(String),
}

impl NriConfig {
    /// Checks name and index as the runtime would (it rejects them at registration).
    pub fn validate(&self) -> Result<(), InvalidPluginId> {
        let valid_name = !self.plugin_name.is_empty()
            && self
                .plugin_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
        if !valid_name {
            return Err(InvalidPluginId::Name(self.plugin_name.clone()));
        }
        if self.plugin_index.len() != 2 || !self.plugin_index.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidPluginId::Index(self.plugin_index.clone()));
        }
        Ok(())
    }
}

/// Why registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("cannot serve the Plugin service: {0}")]
    Serve(ttrpc::Error),
    #[error("RegisterPlugin failed: {0}")]
    Request(ttrpc::Error),
    #[error("the runtime refused: {0}")]
    Refused(String),
}

/// A request from the runtime that could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum MalformedRequest {
    #[error("{0}")]
    Decode(#[from] prost::DecodeError),
    #[error("pod event without a pod")]
    NoPod,
    #[error("container event without a container")]
    NoContainer,
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
    Register(#[from] RegisterError),
    #[error("{0}")]
    Trunk(#[from] mux::MuxError),
    #[error("closing after a malformed {method} request: {reason}")]
    Malformed {
        method: &'static str,
        reason: MalformedRequest,
    },
}

/// State shared by the method handlers of one connection.
struct Shared {
    plugin: Arc<dyn Plugin>,
    stats: Arc<NriStats>,
    /// Chunks of a split Synchronize, until the last one.
    pending_sync: Mutex<(Vec<PodSandbox>, Vec<Container>)>,
    /// A malformed message closes the connection (the runtime resynchronizes on reconnect).
    close: mpsc::UnboundedSender<(&'static str, MalformedRequest)>,
}

#[derive(Clone, Copy)]
enum Method {
    Configure,
    Synchronize,
    Shutdown,
    Pod(Event),
    Container(Event),
    StateChange,
    /// Pod updates (no NRI event of their own): answered harmlessly.
    Ignored,
}

struct Handler {
    method: Method,
    name: &'static str,
    shared: Arc<Shared>,
}

fn decode<M: prost::Message + Default>(payload: &[u8]) -> Result<M, MalformedRequest> {
    Ok(M::decode(payload)?)
}

impl Handler {
    /// The response payload; never an error towards the runtime.
    fn dispatch(&self, payload: &[u8]) -> Vec<u8> {
        let s = &self.shared;
        let outcome: Result<Vec<u8>, MalformedRequest> = (|| match self.method {
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
                    events: s.plugin.events().0,
                }
                .encode_to_vec())
            }
            Method::Synchronize => {
                let req: SynchronizeRequest = decode(payload)?;
                s.stats.count_event(SYNCHRONIZE_SLOT);
                let mut pending = s.pending_sync.lock().unwrap_or_else(|p| p.into_inner());
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
                s.plugin.synchronize(pods, containers);
                Ok(SynchronizeResponse { more: false }.encode_to_vec())
            }
            Method::Shutdown => {
                s.plugin.shutdown();
                Ok(Vec::new())
            }
            Method::Ignored => Ok(Vec::new()),
            Method::Pod(event) => {
                let req: PodRequest = decode(payload)?;
                s.stats.count_event(event as usize);
                let pod = req.pod.ok_or(MalformedRequest::NoPod)?;
                if s.plugin.events().contains(event) {
                    deliver_pod(&*s.plugin, event, pod);
                }
                Ok(Vec::new())
            }
            Method::Container(event) => {
                let req: ContainerRequest = decode(payload)?;
                s.stats.count_event(event as usize);
                let container = req.container.ok_or(MalformedRequest::NoContainer)?;
                if s.plugin.events().contains(event) {
                    deliver_container(&*s.plugin, event, req.pod, container);
                }
                Ok(Vec::new())
            }
            Method::StateChange => {
                let req: StateChangeEvent = decode(payload)?;
                let event = Event::try_from(req.event).unwrap_or(Event::Unknown);
                s.stats.count_event(event as usize);
                let pod_event = matches!(
                    event,
                    Event::RunPodSandbox | Event::StopPodSandbox | Event::RemovePodSandbox
                );
                match (req.pod, req.container) {
                    // Events not subscribed to (a runtime may still send them).
                    _ if !s.plugin.events().contains(event) => {
                        debug!(event = ?event, "NRI: state change ignored")
                    }
                    (Some(pod), _) if pod_event => deliver_pod(&*s.plugin, event, pod),
                    (pod, Some(container)) if !pod_event => {
                        deliver_container(&*s.plugin, event, pod, container)
                    }
                    _ if pod_event => return Err(MalformedRequest::NoPod),
                    _ => return Err(MalformedRequest::NoContainer),
                }
                Ok(Vec::new())
            }
        })();
        match outcome {
            Ok(payload) => payload,
            Err(reason) => {
                s.stats.malformed.fetch_add(1, Relaxed);
                warn!(
                    method = self.name,
                    "NRI: malformed request, answering empty and reconnecting: {reason}"
                );
                let _ = s.close.send((self.name, reason));
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
        ("CreateContainer", Method::Container(Event::CreateContainer)),
        (
            "PostCreateContainer",
            Method::Container(Event::PostCreateContainer),
        ),
        ("StartContainer", Method::Container(Event::StartContainer)),
        (
            "PostStartContainer",
            Method::Container(Event::PostStartContainer),
        ),
        ("UpdateContainer", Method::Container(Event::UpdateContainer)),
        (
            "PostUpdateContainer",
            Method::Container(Event::PostUpdateContainer),
        ),
        ("StopContainer", Method::Container(Event::StopContainer)),
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
    plugin: Arc<dyn Plugin>,
    stats: Arc<NriStats>,
) -> SessionEnd
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + 'static,
{
    let trunk = mux::start(socket);
    let (close_tx, mut close_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        plugin: plugin.clone(),
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
        return RegisterError::Serve(e).into();
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
            Ok(r) => Some(RegisterError::Refused(
                r.status.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
            ).into()),
            Err(e) => Some(RegisterError::Request(e).into()),
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
                Some((method, reason)) = close_rx.recv() => {
                    // Let the (successful) reply to the malformed request reach the runtime
                    // first, so it is not reported there as a failed event.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    SessionEnd::Malformed { method, reason }
                }
            }
        }
    };
    if stats.connected.swap(false, Relaxed) {
        stats.disconnects.fetch_add(1, Relaxed);
    }
    // Bytes that were no NRI frame count as a malformed message too (a bad request was
    // counted where it was found).
    if matches!(end, SessionEnd::Trunk(mux::MuxError::Malformed(_))) {
        stats.malformed.fetch_add(1, Relaxed);
    }
    plugin.disconnected();
    drop(trunk.guard);
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await;
    end
}

#[cfg(test)]
mod tests;
