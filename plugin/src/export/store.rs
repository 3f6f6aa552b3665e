//! The object store: an S3-compatible bucket through the `object_store` crate (the Arrow
//! project's client, used by DataFusion, Polars and delta-rs: multipart uploads, retries with
//! backoff, every S3 dialect we need). An upload counts only once the store confirmed it: the
//! object's size and ETag (the MD5 of the bytes, or for a multipart upload the MD5 of the part
//! MD5s and the part count) must equal what we sent.

use std::{path::PathBuf, sync::Arc, time::Duration};

use md5::{Digest, Md5};
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, RetryConfig,
    aws::{AmazonS3, AmazonS3Builder},
    path::Path as ObjectPath,
    signer::Signer,
};
use tokio::io::AsyncReadExt as _;

use super::credentials::Credentials;

/// How to reach the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub bucket: String,
    /// The store's address (null: AWS S3).
    pub endpoint: Option<String>,
    /// null: `AWS_REGION`/`AWS_DEFAULT_REGION`, else us-east-1.
    pub region: Option<String>,
    pub path_style: bool,
    /// PEM CAs trusted besides the system's roots.
    pub ca_bundle: Option<PathBuf>,
    pub request_timeout: Duration,
    /// Files larger than one part go up in parts of this size (S3's minimum is 5 MiB).
    pub part_bytes: usize,
    pub credentials: Option<Credentials>,
}

/// The store cannot even be set up (the configuration is wrong): a start-up error.
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    #[error("cannot read the CA bundle {path}: {source}")]
    CaBundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA bundle {path} holds no usable certificate: {reason}")]
    CaCertificates { path: PathBuf, reason: String },
    #[error("invalid object store settings: {0}")]
    Client(#[from] object_store::Error),
    #[error("cannot build an HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// One upload (or bucket creation) that did not complete; the file stays in the spool.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("cannot read {path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] object_store::Error),
    #[error("the store holds {key} with {got}, but {want} was sent")]
    Verify {
        key: String,
        got: String,
        want: String,
    },
    #[error("cannot create bucket {bucket}: {reason}")]
    CreateBucket {
        bucket: String,
        status: Option<u16>,
        reason: String,
    },
}

impl UploadError {
    /// The `reason` label of `export_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            UploadError::Local { .. } => "local",
            UploadError::Verify { .. } => "verify",
            UploadError::Store(
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. },
            ) => "credentials",
            UploadError::Store(object_store::Error::NotFound { .. }) => "bucket",
            UploadError::Store(e) => classify(e),
            UploadError::CreateBucket {
                status: Some(401 | 403),
                ..
            } => "credentials",
            UploadError::CreateBucket {
                status: None,
                reason,
                ..
            } if reason.contains("certificate") => "tls",
            UploadError::CreateBucket { status: None, .. } => "unreachable",
            UploadError::CreateBucket { .. } => "bucket",
        }
    }
}

/// A store error that is neither 401/403 nor 404: was the store reachable at all, did its
/// certificate check out?
fn classify(e: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.to_string().contains("certificate") {
            return "tls";
        }
        if let Some(http) = err.downcast_ref::<reqwest::Error>()
            && (http.is_connect() || http.is_timeout())
        {
            return "unreachable";
        }
        source = err.source();
    }
    // The retry layer reports a request that never got a response in its text only.
    let text = e.to_string();
    if text.contains("certificate") || text.contains("UnknownIssuer") {
        "tls"
    } else if text.contains("error sending request") || text.contains("timed out") {
        "unreachable"
    } else if text.contains("InvalidAccessKeyId") || text.contains("SignatureDoesNotMatch") {
        "credentials"
    } else if text.contains("NoSuchBucket") {
        "bucket"
    } else {
        "store"
    }
}

pub struct Store {
    s3: Arc<AmazonS3>,
    bucket: String,
    part_bytes: usize,
    /// For the one request object_store has no call for: creating the bucket.
    http: reqwest::Client,
}

impl Store {
    pub fn new(config: &StoreConfig) -> Result<Store, StoreSetupError> {
        let mut options = ClientOptions::new()
            .with_timeout(config.request_timeout)
            .with_connect_timeout(Duration::from_secs(5));
        let mut http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(5));
        if let Some(path) = &config.ca_bundle {
            let pem = std::fs::read(path).map_err(|source| StoreSetupError::CaBundle {
                path: path.clone(),
                source,
            })?;
            let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
                StoreSetupError::CaCertificates {
                    path: path.clone(),
                    reason: e.to_string(),
                }
            })?;
            for cert in certs {
                options = options.with_root_certificate(cert);
            }
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_virtual_hosted_style_request(!config.path_style)
            // Few quick retries per request; the exporter's own loop retries the file with a
            // longer, capped backoff while the store stays down.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(15),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
            options = options.with_allow_http(endpoint.starts_with("http://"));
        }
        builder = builder.with_client_options(options);
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        } else if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        if let Some(c) = &config.credentials {
            builder = builder
                .with_access_key_id(&c.key_id)
                .with_secret_access_key(&c.secret);
            if let Some(token) = &c.token {
                builder = builder.with_token(token);
            }
        }
        Ok(Store {
            s3: Arc::new(builder.build()?),
            bucket: config.bucket.clone(),
            part_bytes: config.part_bytes.max(5 << 20),
            http: http.build()?,
        })
    }

    /// Creates the bucket if it is missing (a bucket we already own is fine).
    pub async fn create_bucket(&self) -> Result<(), UploadError> {
        // A presigned PUT on the bucket itself is S3's CreateBucket, signed the way every
        // other request is (object_store does not offer the call).
        let url = self
            .s3
            .signed_url(
                reqwest::Method::PUT,
                &ObjectPath::from(""),
                Duration::from_secs(300),
            )
            .await?;
        let failed = |status: Option<u16>, reason: String| UploadError::CreateBucket {
            bucket: self.bucket.clone(),
            status,
            reason,
        };
        let response = self
            .http
            .put(url)
            .body(Vec::new())
            .send()
            .await
            .map_err(|e| failed(None, with_causes(&e)))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() || body.contains("BucketAlreadyOwnedByYou") {
            return Ok(());
        }
        Err(failed(
            Some(status.as_u16()),
            format!("{status}: {}", s3_error(&body)),
        ))
    }

    /// Uploads `path` under `key`, then checks what the store holds. Returns the bytes sent.
    pub async fn upload(
        &self,
        key: &str,
        path: &std::path::Path,
        content_type: &'static str,
        metadata: &[(&'static str, String)],
    ) -> Result<u64, UploadError> {
        let local = |source| UploadError::Local {
            path: path.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(local)?;
        let size = file.metadata().await.map_err(local)?.len();
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, content_type.into());
        for (k, v) in metadata {
            attributes.insert(Attribute::Metadata((*k).into()), v.clone().into());
        }
        let location = ObjectPath::from(key);
        let want_etag = if size <= self.part_bytes as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).await.map_err(local)?;
            let etag = hex(&Md5::digest(&data));
            let options = PutOptions {
                attributes,
                ..PutOptions::default()
            };
            self.s3
                .put_opts(&location, PutPayload::from(data), options)
                .await?;
            etag
        } else {
            let options = PutMultipartOptions {
                attributes,
                ..PutMultipartOptions::default()
            };
            let mut upload = self.s3.put_multipart_opts(&location, options).await?;
            let mut part_digests = Vec::new();
            let mut parts = 0;
            let result: Result<(), UploadError> = async {
                loop {
                    let mut part = Vec::with_capacity(self.part_bytes);
                    (&mut file)
                        .take(self.part_bytes as u64)
                        .read_to_end(&mut part)
                        .await
                        .map_err(local)?;
                    if part.is_empty() {
                        break;
                    }
                    part_digests.extend_from_slice(&Md5::digest(&part));
                    parts += 1;
                    upload.put_part(PutPayload::from(part)).await?;
                }
                upload.complete().await?;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                // No half object is left for the store to keep (or bill).
                let _ = upload.abort().await;
                return Err(e);
            }
            format!("{}-{parts}", hex(&Md5::digest(&part_digests)))
        };
        let stored = self.s3.head(&location).await?;
        let got_etag = stored
            .e_tag
            .as_deref()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string();
        if stored.size != size || got_etag != want_etag {
            return Err(UploadError::Verify {
                key: key.into(),
                got: format!("{} bytes, ETag {got_etag:?}", stored.size),
                want: format!("{size} bytes, ETag {want_etag:?}"),
            });
        }
        Ok(size)
    }
}

/// An error and its causes on one line (reqwest's own text leaves out why a request failed).
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// An S3 error body on one line: its code and message, or the text with its line breaks
/// folded.
fn s3_error(body: &str) -> String {
    let element = |name: &str| {
        let start = body.find(&format!("<{name}>"))? + name.len() + 2;
        let end = body[start..].find(&format!("</{name}>"))?;
        Some(body[start..start + end].trim().to_string())
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => body
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(300)
            .collect(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_named_by_what_the_operator_must_fix() {
        let store = |e| UploadError::Store(e).reason();
        let source = || Box::new(std::io::Error::other("x")) as _;
        assert_eq!(
            store(object_store::Error::PermissionDenied {
                path: "k".into(),
                source: source()
            }),
            "credentials"
        );
        assert_eq!(
            store(object_store::Error::NotFound {
                path: "k".into(),
                source: source()
            }),
            "bucket"
        );
        let generic = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::other(text.to_string())),
        };
        assert_eq!(
            store(generic("error sending request for url")),
            "unreachable"
        );
        assert_eq!(
            store(generic("<Code>SignatureDoesNotMatch</Code>")),
            "credentials"
        );
        assert_eq!(store(generic("500 Internal Server Error")), "store");
        let create = |status| UploadError::CreateBucket {
            bucket: "b".into(),
            status,
            reason: String::new(),
        };
        assert_eq!(create(Some(403)).reason(), "credentials");
        assert_eq!(create(None).reason(), "unreachable");
        assert_eq!(create(Some(400)).reason(), "bucket");
        assert_eq!(
            s3_error(
                "<?xml version=\"1.0\"?>\n<Error>\n  <Code>AccessDenied</Code>\n  <Message>Access Denied.</Message>\n</Error>"
            ),
            "AccessDenied: Access Denied."
        );
        assert_eq!(s3_error("bad\ngateway\n"), "bad gateway");
        // The multipart ETag: MD5 of the part MD5s, then the part count.
        assert_eq!(hex(&Md5::digest(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
