//! The plugin side against a runtime side built from the same pieces (mux + ttrpc): the
//! method paths, the handshake order, split synchronization, StateChange and dedicated RPCs
//! reaching the same handler, and a malformed message ending the connection without an error
//! reply. The real containerd is exercised by the e2e suite.

use std::sync::Mutex as StdMutex;

use tokio::{net::UnixStream, sync::oneshot};

use super::*;

#[derive(Default)]
struct Recorder {
    calls: StdMutex<Vec<String>>,
}

impl Recorder {
    fn pod(&self, event: Event, pod: PodSandbox) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{} {}/{}", event.name(), pod.namespace, pod.name));
    }

    fn container(&self, event: Event, pod: Option<PodSandbox>, container: Container) {
        self.calls.lock().unwrap().push(format!(
            "{} {} pod={} cgroups={}",
            event.name(),
            container.name,
            pod.map(|p| p.name).unwrap_or_default(),
            container.linux.map(|l| l.cgroups_path).unwrap_or_default()
        ));
    }
}

// The events the agent's plugin handles; every other handler stays the framework's no-op.
crate::nri_plugin! {
    impl Plugin for Recorder {
        fn synchronize(&self, pods: Vec<PodSandbox>, containers: Vec<Container>) {
            let pods: Vec<_> = pods.iter().map(|p| p.name.clone()).collect();
            let containers: Vec<_> = containers.iter().map(|c| c.name.clone()).collect();
            self.calls
                .lock()
                .unwrap()
                .push(format!("sync pods={pods:?} containers={containers:?}"));
        }
        fn run_pod_sandbox(&self, pod: PodSandbox) {
            self.pod(Event::RunPodSandbox, pod);
        }
        fn remove_pod_sandbox(&self, pod: PodSandbox) {
            self.pod(Event::RemovePodSandbox, pod);
        }
        fn start_container(&self, pod: Option<PodSandbox>, container: Container) {
            self.container(Event::StartContainer, pod, container);
        }
        fn remove_container(&self, pod: Option<PodSandbox>, container: Container) {
            self.container(Event::RemoveContainer, pod, container);
        }
    }
}

/// The runtime's Runtime service: records RegisterPlugin.
struct RegisterHandler(StdMutex<Option<oneshot::Sender<RegisterPluginRequest>>>);

#[async_trait]
impl MethodHandler for RegisterHandler {
    async fn handler(&self, _ctx: TtrpcContext, req: Request) -> ttrpc::Result<Response> {
        let reg = RegisterPluginRequest::decode(&req.payload[..]).unwrap();
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(reg);
        }
        let mut r = Response::new();
        r.set_status(ttrpc::get_status(Code::OK, ""));
        Ok(r)
    }
}

struct FakeRuntime {
    client: Client,
    _server: Server,
    _guard: mux::TrunkGuard,
}

impl FakeRuntime {
    async fn call(&self, method: &str, payload: Vec<u8>) -> Response {
        let mut req = Request::new();
        req.service = PLUGIN_SERVICE.into();
        req.method = method.into();
        req.timeout_nano = 2_000_000_000;
        req.payload = payload;
        self.client.request(req).await.expect("ttrpc call")
    }
}

fn pod(name: &str, ns: &str) -> PodSandbox {
    PodSandbox {
        id: format!("sandbox-{name}"),
        name: name.into(),
        uid: format!("uid-{name}"),
        namespace: ns.into(),
        ..Default::default()
    }
}

fn container(name: &str) -> Container {
    Container {
        id: format!("ctr-{name}"),
        name: name.into(),
        linux: Some(proto::LinuxContainer {
            cgroups_path: format!("/k8s/pod1/ctr-{name}"),
        }),
        ..Default::default()
    }
}

/// Starts the plugin on one end of a socket pair and a fake runtime on the other; returns the
/// runtime once the plugin registered, and the plugin session's outcome.
async fn start() -> (
    FakeRuntime,
    Arc<Recorder>,
    RegisterPluginRequest,
    tokio::task::JoinHandle<SessionEnd>,
) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let recorder = Arc::new(Recorder::default());
    let config = NriConfig {
        plugin_index: "42".into(),
        ..NriConfig::default()
    };
    let plugin: Arc<dyn Plugin> = recorder.clone();
    let session = tokio::spawn(async move {
        serve_connection(ours, &config, plugin, Arc::new(NriStats::default())).await
    });
    let (runtime, registered) = fake_runtime(theirs).await;
    (runtime, recorder, registered, session)
}

/// The runtime's side of a connection a plugin made or was handed: serves RegisterPlugin and
/// returns once the plugin registered.
async fn fake_runtime(theirs: UnixStream) -> (FakeRuntime, RegisterPluginRequest) {
    let trunk = mux::start(theirs);
    let (reg_tx, reg_rx) = oneshot::channel();
    let mut methods: HashMap<String, Box<dyn MethodHandler + Send + Sync>> = HashMap::new();
    methods.insert(
        "RegisterPlugin".into(),
        Box::new(RegisterHandler(StdMutex::new(Some(reg_tx)))),
    );
    let mut server = Server::new()
        .add_listener(one_connection(trunk.runtime))
        .register_service(HashMap::from([(
            RUNTIME_SERVICE.to_string(),
            Service {
                methods,
                streams: HashMap::new(),
            },
        )]));
    server.start().await.unwrap();
    let client = Client::new(Socket::new(trunk.plugin));
    let registered = tokio::time::timeout(Duration::from_secs(5), reg_rx)
        .await
        .expect("plugin registers within 5 s")
        .unwrap();
    (
        FakeRuntime {
            client,
            _server: server,
            _guard: trunk.guard,
        },
        registered,
    )
}

#[tokio::test]
async fn handshake_sync_and_events_reach_the_handler() {
    let (runtime, recorder, registered, _session) = start().await;
    assert_eq!(registered.plugin_name, "sysflow");
    assert_eq!(registered.plugin_idx, "42");

    let r = runtime
        .call(
            "Configure",
            ConfigureRequest {
                runtime_name: "containerd".into(),
                runtime_version: "1.7.24".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        )
        .await;
    let configured = ConfigureResponse::decode(&r.payload[..]).unwrap();
    // RUN_POD_SANDBOX(1<<0) | REMOVE_POD_SANDBOX(1<<2) | START_CONTAINER(1<<5) |
    // REMOVE_CONTAINER(1<<10)
    assert_eq!(configured.events, 0x425);

    // A split synchronization: the first chunk is echoed with more=true, the handler sees
    // everything once.
    let r = runtime
        .call(
            "Synchronize",
            SynchronizeRequest {
                pods: vec![pod("a", "ns1")],
                containers: vec![container("c1")],
                more: true,
            }
            .encode_to_vec(),
        )
        .await;
    assert!(SynchronizeResponse::decode(&r.payload[..]).unwrap().more);
    let r = runtime
        .call(
            "Synchronize",
            SynchronizeRequest {
                pods: vec![pod("b", "ns2")],
                containers: vec![container("c2")],
                more: false,
            }
            .encode_to_vec(),
        )
        .await;
    assert!(!SynchronizeResponse::decode(&r.payload[..]).unwrap().more);

    // Old runtimes: StateChange; new ones: dedicated RPCs. Both reach the same handler.
    runtime
        .call(
            "StateChange",
            StateChangeEvent {
                event: Event::RunPodSandbox as i32,
                pod: Some(pod("web", "shop")),
                container: None,
            }
            .encode_to_vec(),
        )
        .await;
    runtime
        .call(
            "StateChange",
            StateChangeEvent {
                event: Event::StartContainer as i32,
                pod: Some(pod("web", "shop")),
                container: Some(container("nginx")),
            }
            .encode_to_vec(),
        )
        .await;
    runtime
        .call(
            "RemoveContainer",
            ContainerRequest {
                pod: Some(pod("web", "shop")),
                container: Some(container("nginx")),
            }
            .encode_to_vec(),
        )
        .await;
    let r = runtime
        .call(
            "RemovePodSandbox",
            PodRequest {
                pod: Some(pod("web", "shop")),
            }
            .encode_to_vec(),
        )
        .await;
    assert_eq!(r.status.code(), Code::OK);
    // An event the plugin does not handle still gets a harmless empty answer.
    let r = runtime
        .call(
            "CreateContainer",
            ContainerRequest {
                pod: Some(pod("web", "shop")),
                container: Some(container("sidecar")),
            }
            .encode_to_vec(),
        )
        .await;
    assert_eq!(r.status.code(), Code::OK);
    assert!(r.payload.is_empty());

    assert_eq!(
        *recorder.calls.lock().unwrap(),
        vec![
            r#"sync pods=["a", "b"] containers=["c1", "c2"]"#.to_string(),
            "run_pod_sandbox shop/web".into(),
            "start_container nginx pod=web cgroups=/k8s/pod1/ctr-nginx".into(),
            "remove_container nginx pod=web cgroups=/k8s/pod1/ctr-nginx".into(),
            "remove_pod_sandbox shop/web".into(),
        ]
    );
}

#[tokio::test]
async fn malformed_message_is_answered_ok_then_the_connection_closes() {
    let (runtime, recorder, _registered, session) = start().await;
    // Field 1 says "length-delimited, 100 bytes" but only 3 follow.
    let r = runtime
        .call("RunPodSandbox", vec![0x0a, 100, 1, 2, 3])
        .await;
    assert_eq!(r.status.code(), Code::OK);
    let end = tokio::time::timeout(Duration::from_secs(5), session)
        .await
        .expect("session ends")
        .unwrap();
    let SessionEnd::Malformed {
        method: "RunPodSandbox",
        reason: MalformedRequest::Decode(_),
    } = end
    else {
        panic!("expected a malformed RunPodSandbox request, got {end:?}");
    };
    assert!(recorder.calls.lock().unwrap().is_empty());
}

/// A mux frame header: connection id and payload length, both big-endian.
fn frame_header(conn: u32, len: u32) -> Vec<u8> {
    [conn.to_be_bytes(), len.to_be_bytes()].concat()
}

/// Over a real unix socket at the runtime's path: a runtime that sends a frame for the
/// reserved connection 0, a frame longer than ttrpc allows, half a frame, or a whole frame of
/// bytes that are no ttrpc message has its connection dropped by the plugin, which connects
/// again (with backoff) and, once the runtime behaves, registers and handles pods as before.
#[tokio::test]
async fn garbage_and_half_frames_drop_the_connection_and_the_plugin_reconnects() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nri.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let recorder = Arc::new(Recorder::default());
    let config = NriConfig {
        socket: path.clone(),
        plugin_index: "42".into(),
        ..NriConfig::default()
    };
    let stats = Arc::new(NriStats::default());
    let mut stub = Stub::new(config, recorder.clone(), stats.clone());
    let plugin = tokio::spawn(async move { stub.run().await });

    let bad: [(&str, Vec<u8>); 4] = [
        (
            "a frame for connection 0",
            [frame_header(0, 1), vec![0]].concat(),
        ),
        ("a 5 MiB frame", frame_header(1, 5 << 20)),
        ("half a frame", [frame_header(1, 100), vec![7; 10]].concat()),
        (
            "a frame of garbage",
            [frame_header(1, 64), vec![0xff; 64]].concat(),
        ),
    ];
    for (what, bytes) in bad {
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .unwrap_or_else(|_| panic!("the plugin connects again before {what}"))
            .unwrap();
        conn.write_all(&bytes).await.unwrap();
        if what == "half a frame" {
            // The rest of the frame never comes: the runtime closes its side.
            conn.shutdown().await.unwrap();
        }
        // The plugin drops the connection: an end of stream, or a reset when it closed with
        // our bytes unread.
        let mut sent = Vec::new();
        let sent_at = std::time::Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut sent))
            .await
            .unwrap_or_else(|_| panic!("the plugin drops the connection after {what}"));
        if let Err(e) = read {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{what}: {e}");
        }
        eprintln!("{what}: dropped after {:?}", sent_at.elapsed());
    }
    // Each counted (before the socket closed) as a malformed message, the half frame too.
    assert_eq!(
        stats.malformed.load(std::sync::atomic::Ordering::Relaxed),
        4
    );

    let (conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the plugin connects again")
        .unwrap();
    let (runtime, registered) = fake_runtime(conn).await;
    assert_eq!(registered.plugin_idx, "42");
    runtime
        .call(
            "Configure",
            ConfigureRequest {
                runtime_name: "containerd".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        )
        .await;
    runtime
        .call("Synchronize", SynchronizeRequest::default().encode_to_vec())
        .await;
    runtime
        .call(
            "RunPodSandbox",
            PodRequest {
                pod: Some(pod("web-0", "shop")),
            }
            .encode_to_vec(),
        )
        .await;
    assert_eq!(
        *recorder.calls.lock().unwrap(),
        ["sync pods=[] containers=[]", "run_pod_sandbox shop/web-0"]
    );
    plugin.abort();
}

#[test]
fn plugin_index_and_name_are_checked_like_the_runtime_does() {
    let ok = NriConfig::default();
    assert_eq!(ok.validate(), Ok(()));
    let bad = NriConfig {
        plugin_index: "7".into(),
        ..NriConfig::default()
    };
    assert_eq!(
        bad.validate().unwrap_err().to_string(),
        "plugin index \"7\" must be exactly two digits (00-99)"
    );
    let bad = NriConfig {
        plugin_name: "sys flow".into(),
        ..NriConfig::default()
    };
    assert_eq!(
        bad.validate(),
        Err(InvalidPluginId::Name("sys flow".into()))
    );
}
