//! The runtime's side of an NRI connection as arbitrary bytes: the mux's frames, ttrpc's
//! messages and the prost-decoded requests, through the plugin's own connection handling.
//! Time is paused, so the registration timeout passes at once when nothing answers.
#![no_main]

use std::{sync::Arc, time::Duration};

use libfuzzer_sys::fuzz_target;
use nri_sysflow::nri::{
    NriConfig,
    proto::{Container, PodSandbox},
    serve_connection,
    stats::NriStats,
};
use tokio::io::AsyncWriteExt as _;

struct Handles;

nri_sysflow::nri_plugin! {
    impl Plugin for Handles {
        fn synchronize(&self, _pods: Vec<PodSandbox>, _containers: Vec<Container>) {}
        fn run_pod_sandbox(&self, _pod: PodSandbox) {}
        fn start_container(&self, _pod: Option<PodSandbox>, _container: Container) {}
        fn remove_container(&self, _pod: Option<PodSandbox>, _container: Container) {}
    }
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let session = tokio::spawn(async move {
            serve_connection(
                ours,
                &NriConfig::default(),
                Arc::new(Handles),
                Arc::new(NriStats::default()),
            )
            .await
        });
        let _ = theirs.write_all(data).await;
        let _ = theirs.shutdown().await;
        // The session ends (the bytes end, or are refused); it must not hang or panic.
        let ended = tokio::time::timeout(Duration::from_secs(60), session).await;
        assert!(matches!(ended, Ok(Ok(_))), "the session hung or panicked");
    });
});
