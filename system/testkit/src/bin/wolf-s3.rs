//! A small S3 server for tests and the testbed: s3s-fs (objects as files, crash-consistent by
//! rename) behind hyper, with TCP_NODELAY on every connection (without it GETs stall ~40 ms on
//! delayed ACKs, see TESTBED.md).
//!
//! `wolf-s3 [--host ADDR] --port PORT --access-key AK --secret-key SK ROOT` (ADDR 127.0.0.1
//! unless given: `0.0.0.0` in a container)

use std::path::PathBuf;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, "--port").unwrap_or_else(|| "0".into()).parse()?;
    let root = PathBuf::from(
        args.last()
            .filter(|a| !a.starts_with("--"))
            .cloned()
            .unwrap_or_else(|| ".".into()),
    );
    std::fs::create_dir_all(&root)?;
    let fs = s3s_fs::FileSystem::new(&root).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut b = S3ServiceBuilder::new(fs);
    if let (Some(ak), Some(sk)) = (arg(&args, "--access-key"), arg(&args, "--secret-key")) {
        b.set_auth(SimpleAuth::from_single(ak, sk));
    }
    let service = b.build();
    let host = arg(&args, "--host").unwrap_or_else(|| "127.0.0.1".into());
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    println!("wolf-s3 listening on http://{}", listener.local_addr()?);
    let http = Builder::new(TokioExecutor::new());
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
