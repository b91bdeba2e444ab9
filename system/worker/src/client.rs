//! The manager side: one `Run` call on a worker's socket.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Endpoint, Uri};
use wolf_proto::v1::worker_client::WorkerClient;
use wolf_sandbox::protocol::{JobReport, JobSpec};

/// Why a worker call failed (the manager retries the job on another worker).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect to the socket.
    #[error("connect to worker")]
    Connect(#[source] tonic::transport::Error),
    /// The call failed (the worker died, refused, or broke the stream).
    #[error("worker call failed: {}: {}", .0.code(), .0.message())]
    Call(tonic::Status),
    /// A frame that does not encode or parse (a worker answering garbage).
    #[error("worker frame")]
    Frame(#[source] std::io::Error),
}

/// Send the job to the worker listening on `socket` and wait for its report.
pub async fn run(
    socket: &Path,
    token: &str,
    job_id: &str,
    spec: &JobSpec,
    blobs: Vec<Vec<u8>>,
) -> Result<(JobReport, Vec<Vec<u8>>), ClientError> {
    let path: PathBuf = socket.to_path_buf();
    // The URI is a placeholder: every connection goes to the socket.
    let channel = Endpoint::from_static("http://worker.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(ClientError::Connect)?;
    let mut client = WorkerClient::new(channel)
        .max_decoding_message_size(512 << 20)
        .max_encoding_message_size(512 << 20);
    let msg = crate::convert::request(job_id, spec, blobs).map_err(ClientError::Frame)?;
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = token.parse() {
        req.metadata_mut().insert(crate::TOKEN_HEADER, v);
    }
    // W3C trace context of the manager's span, for the worker's logs.
    if let Some(tp) = wolf_telemetry::traceparent().and_then(|t| t.parse().ok()) {
        req.metadata_mut().insert("traceparent", tp);
    }
    let reply = client.run(req).await.map_err(ClientError::Call)?.into_inner();
    crate::convert::report(reply).map_err(ClientError::Frame)
}
