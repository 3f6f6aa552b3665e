//! `/metrics` over HTTP: the Prometheus text format (0.0.4) or OpenMetrics, as the scraper's
//! Accept header asks. Encoding runs on tokio's blocking pool, so a scrape never takes an async
//! worker from the ring readers or the pipeline.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ACCEPT, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

use super::Metrics;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` (fails at start-up if it cannot) and serves until the process ends.
pub async fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "serving /metrics");
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    debug!("metrics accept: {e}");
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| respond(req, metrics.clone()));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%peer, "metrics connection: {e}");
                }
            });
        }
    });
    Ok(bound)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}

/// What `/readyz` answers: ready once the eBPF programs are attached, the output takes
/// writes, and the agent knows where pod metadata comes from (NRI connected, or containerd's
/// API, or no runtime at all: standalone).
#[derive(Default)]
pub struct Readiness {
    probes: AtomicBool,
    output: AtomicBool,
    metadata: AtomicBool,
}

impl Readiness {
    pub fn set_probes_attached(&self, yes: bool) {
        self.probes.store(yes, Relaxed);
    }

    pub fn set_output_writable(&self, yes: bool) {
        self.output.store(yes, Relaxed);
    }

    pub fn set_metadata_source(&self, yes: bool) {
        self.metadata.store(yes, Relaxed);
    }

    /// What is not ready yet, in words; empty when ready.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (&self.probes, "eBPF programs not attached"),
            (&self.output, "output not writable"),
            (&self.metadata, "no pod metadata source yet"),
        ]
        .into_iter()
        .filter(|(flag, _)| !flag.load(Relaxed))
        .map(|(_, what)| what)
        .collect()
    }
}

fn text(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r
}

async fn respond(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match req.uri().path() {
        "/metrics" => {}
        // Liveness: the process answers.
        "/healthz" => return Ok(plain(StatusCode::OK, "ok\n")),
        "/readyz" => {
            let missing = metrics.readiness.missing();
            return Ok(if missing.is_empty() {
                plain(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", missing.join(", ")),
                )
            });
        }
        _ => {
            return Ok(plain(
                StatusCode::NOT_FOUND,
                "nri-sysflow: metrics are at /metrics, liveness at /healthz, readiness at /readyz\n",
            ));
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n"));
    }
    let openmetrics = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let body = tokio::task::spawn_blocking(move || {
        if openmetrics {
            metrics.encode_openmetrics()
        } else {
            metrics.encode_text()
        }
    })
    .await
    .unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        if openmetrics {
            OPENMETRICS_CONTENT_TYPE
        } else {
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE
        }
        .parse()
        .expect("static header"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_what_is_missing_until_everything_is_there() {
        let r = Readiness::default();
        assert_eq!(
            r.missing(),
            [
                "eBPF programs not attached",
                "output not writable",
                "no pod metadata source yet"
            ]
        );
        r.set_probes_attached(true);
        r.set_metadata_source(true);
        assert_eq!(r.missing(), ["output not writable"]);
        r.set_output_writable(true);
        assert!(r.missing().is_empty());
    }
}
