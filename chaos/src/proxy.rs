//! A userspace TCP proxy put in front of a dependency to slow it down or cut it off (this
//! kernel has no netem). Each direction is pumped by its own thread; a delay holds every chunk
//! before it is forwarded; a cut closes every open connection and refuses new ones until healed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct State {
    delay_us: AtomicU64,
    cut: AtomicBool,
    stop: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    /// Loopback port it listens on.
    pub port: u16,
    state: Arc<State>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<State>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = state.delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        if state.cut.load(Ordering::Relaxed) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Proxy {
    /// Forward a free loopback port to `upstream`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                if st.cut.load(Ordering::Relaxed) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                    let mut open = st.open.lock().unwrap_or_else(|e| e.into_inner());
                    open.retain(|s| s.peer_addr().is_ok());
                    open.push(c2);
                    open.push(s2);
                }
                let (c_read, s_read) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                let (a, b) = (st.clone(), st.clone());
                std::thread::spawn(move || pump(c_read, server, a));
                std::thread::spawn(move || pump(s_read, client, b));
            }
        });
        Ok(Self { port, state })
    }

    /// Hold every chunk this long before forwarding it (0: no delay).
    pub fn set_delay(&self, d: Duration) {
        self.state.delay_us.store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cut the link: close every open connection and refuse new ones; `false` heals it.
    pub fn set_cut(&self, cut: bool) {
        self.state.cut.store(cut, Ordering::Relaxed);
        if cut {
            for s in self.state.open.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.set_cut(true);
        // Wake the accept loop so it sees the stop flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut c = c;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(port: u16) -> std::io::Result<Duration> {
        let mut c = TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        let t = Instant::now();
        c.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf)?;
        assert_eq!(&buf, b"ping");
        Ok(t.elapsed())
    }

    #[test]
    fn forwards_delays_cuts_and_heals() {
        let p = Proxy::start(echo_server()).unwrap();
        assert!(round_trip(p.port).unwrap() < Duration::from_millis(100));
        p.set_delay(Duration::from_millis(150));
        assert!(
            round_trip(p.port).unwrap() >= Duration::from_millis(300),
            "both directions held"
        );
        p.set_delay(Duration::ZERO);
        let mut open = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        open.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        open.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).unwrap();
        p.set_cut(true);
        let mut rest = [0u8; 1];
        assert!(
            matches!(open.read(&mut rest), Ok(0) | Err(_)),
            "an open connection is closed"
        );
        assert!(round_trip(p.port).is_err(), "new connections are refused");
        p.set_cut(false);
        assert!(round_trip(p.port).is_ok(), "healed");
    }
}
