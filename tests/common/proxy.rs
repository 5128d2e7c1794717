//! A TCP proxy the test controls, one in front of each Kafka node's client listener. The nodes
//! advertise the proxies' ports (`cluster.py --client-advertised-ports`), so every client
//! connection, the services' and the harness's, goes through them. [`Proxy::cut`] closes every
//! open connection at once and refuses new ones for a while: what a network partition or a
//! firewall dropping idle flows does to a client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct State {
    /// Bumped by every cut: each connection ends when it changes.
    generation: watch::Sender<u64>,
    refuse_until: Mutex<Option<Instant>>,
    connections: AtomicU64,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
    listener: Mutex<Option<std::net::TcpListener>>,
}

impl Proxy {
    /// Binds a loopback port now (so it can be advertised before the node starts); forwarding
    /// starts with [`Proxy::forward_to`].
    pub fn bind() -> Proxy {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Proxy {
            port: l.local_addr().unwrap().port(),
            state: Arc::new(State {
                generation: watch::channel(0).0,
                refuse_until: Mutex::new(None),
                connections: AtomicU64::new(0),
            }),
            listener: Mutex::new(Some(l)),
        }
    }

    /// Forwards every connection to `target` on loopback, on the current Tokio runtime.
    pub fn forward_to(&self, target: u16, rt: &tokio::runtime::Handle) {
        let std = self.listener.lock().unwrap().take().expect("forwarding already started");
        let state = self.state.clone();
        rt.spawn(async move {
            let listener = TcpListener::from_std(std).unwrap();
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                let refused = state.refuse_until.lock().unwrap().is_some_and(|t| Instant::now() < t);
                if refused {
                    drop(inbound);
                    continue;
                }
                state.connections.fetch_add(1, Ordering::Relaxed);
                let mut cut = state.generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {
                            // an abortive close (RST), as a dropped flow looks to both ends;
                            // a zero linger sends the reset at once and never blocks on drop
                            #[allow(deprecated)]
                            let _ = (inbound.set_linger(Some(Duration::ZERO)), outbound.set_linger(Some(Duration::ZERO)));
                        }
                    }
                });
            }
        });
    }

    /// Resets every open connection and refuses new ones for `hold`.
    pub fn cut(&self, hold: Duration) {
        *self.state.refuse_until.lock().unwrap() = Some(Instant::now() + hold);
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// Connections accepted and forwarded so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }
}
