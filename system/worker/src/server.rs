//! The worker side: runs in the sandbox's init process after it is Ready, serves one `Run`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};
use tonic::transport::Server;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use wolf_proto::v1;
use wolf_proto::v1::worker_server::{Worker, WorkerServer};
use wolf_sandbox::init::{Execute, JobServerContext};
use wolf_sandbox::protocol::JobReport;

type Job = (v1::RunRequest, oneshot::Sender<v1::RunReply>);

struct Service {
    host_uid: u32,
    token: String,
    jobs: mpsc::Sender<Job>,
    taken: AtomicBool,
    /// A session's worker takes job after job (one at a time: the channel holds one).
    session: bool,
}

#[tonic::async_trait]
impl Worker for Service {
    async fn run(&self, req: Request<v1::RunRequest>) -> Result<Response<v1::RunReply>, Status> {
        // SO_PEERCRED: the manager runs as the host's uid outside this pid namespace, where the
        // kernel reports its pid as 0. Anything inside the sandbox has a real pid here.
        let cred = req.extensions().get::<UdsConnectInfo>().and_then(|i| i.peer_cred);
        let allowed = cred.is_some_and(|c| c.uid() == self.host_uid && c.pid().unwrap_or(0) == 0);
        if !allowed {
            return Err(Status::permission_denied(format!(
                "peer {cred:?} is not this worker's manager"
            )));
        }
        // Other host processes of the same uid pass SO_PEERCRED; only the manager knows the token.
        let token = req
            .metadata()
            .get(crate::TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if token.is_empty() || token != self.token {
            return Err(Status::permission_denied("missing or wrong worker token"));
        }
        if !self.session && self.taken.swap(true, Ordering::SeqCst) {
            return Err(Status::failed_precondition("this worker already ran its job"));
        }
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((req.into_inner(), tx))
            .await
            .map_err(|_| Status::unavailable("worker is shutting down"))?;
        rx.await
            .map(Response::new)
            .map_err(|_| Status::internal("the job was not executed"))
    }
}

/// Serve exactly one job on `ctx.listener` (a session's sandbox: job after job, until the host
/// is gone), executing it with `execute`, then return. Register
/// with `wolf_sandbox::init::register_job_server(serve_one)`.
pub fn serve_one(ctx: JobServerContext, execute: &mut Execute<'_>) -> io::Result<()> {
    // Single-threaded: this is the sandbox's init process, whose supervisors were forked
    // before this runtime exists.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    rt.block_on(async move {
        ctx.listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(ctx.listener)?;
        let (jobs_tx, mut jobs_rx) = mpsc::channel::<Job>(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let svc = Service {
            host_uid: ctx.host_uid,
            token: ctx.token,
            jobs: jobs_tx,
            taken: AtomicBool::new(false),
            session: ctx.session,
        };
        let server = Server::builder()
            .add_service(
                WorkerServer::new(svc)
                    .max_decoding_message_size(512 << 20)
                    .max_encoding_message_size(512 << 20),
            )
            .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), async {
                let _ = stop_rx.await;
            });
        tokio::pin!(server);
        ctx.host.set_nonblocking(true)?;
        let host = tokio::net::UnixStream::from_std(ctx.host)?;
        // The host writes on this channel once more at most: a piped job's stdio descriptors,
        // before its call. Anything else readable is end of file: the host is gone.
        let mut stdio = Vec::new();
        loop {
            tokio::select! {
                r = &mut server => return r.map_err(io::Error::other),
                _ = host.readable() => match take_stdio(&host) {
                    Taken::Stdio(fds) if stdio.is_empty() => stdio = fds,
                    Taken::Nothing => {}
                    Taken::Stdio(_) | Taken::Gone => return Ok(()),
                },
                job = jobs_rx.recv() => {
                    if let Some((req, reply)) = job {
                        // Sent before the call: already in the channel if it was sent at all.
                        if stdio.is_empty()
                            && let Taken::Stdio(fds) = take_stdio(&host)
                        {
                            stdio = fds;
                        }
                        answer(req, reply, execute, std::mem::take(&mut stdio));
                    }
                    if !ctx.session {
                        break;
                    }
                }
            }
        }
        // The answer may still be on its way: h2 sends a large reply as the client's flow
        // control window opens, after the handler is done. Exiting now (even after a graceful
        // stop) could cut it off, and the manager would see a broken body and run the job
        // again. So the server keeps serving until the manager, having read the answer,
        // destroys this sandbox or goes away.
        loop {
            tokio::select! {
                r = &mut server => return r.map_err(io::Error::other),
                _ = host.readable() => {
                    if matches!(take_stdio(&host), Taken::Gone | Taken::Stdio(_)) {
                        break;
                    }
                }
            }
        }
        let _ = stop_tx.send(());
        server.await.map_err(io::Error::other)
    })
}

/// What the host's channel held.
enum Taken {
    Stdio(Vec<std::os::fd::OwnedFd>),
    Nothing,
    Gone,
}

fn take_stdio(host: &tokio::net::UnixStream) -> Taken {
    use std::os::fd::AsFd;
    let got = host.try_io(tokio::io::Interest::READABLE, || {
        wolf_sandbox::protocol::recv_byte_with_fds_on(host.as_fd())
    });
    match got {
        Ok((_, fds)) if !fds.is_empty() => Taken::Stdio(fds),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Taken::Nothing,
        _ => Taken::Gone,
    }
}

/// Execute the call's job and send the answer (a bad frame is refused, never trusted).
fn answer(
    req: v1::RunRequest,
    reply: oneshot::Sender<v1::RunReply>,
    execute: &mut Execute<'_>,
    stdio: Vec<std::os::fd::OwnedFd>,
) {
    let answer = match crate::convert::job(req) {
        // Blocking on purpose: this process exists for this one job.
        Ok((spec, blobs)) => {
            let (report, out) = execute(spec, blobs, stdio);
            crate::convert::reply(&report, out)
        }
        Err(e) => Err(e),
    };
    let answer = answer.unwrap_or_else(|e| {
        let refused = JobReport {
            error: Some(format!("bad job frame: {e}")),
            ..Default::default()
        };
        crate::convert::reply(&refused, Vec::new()).expect("a report without steps encodes")
    });
    let _ = reply.send(answer);
}
