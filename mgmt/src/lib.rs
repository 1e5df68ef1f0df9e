//! presence-mgmt: the management plane. A hyper 1 HTTP server on its own
//! thread (a current-thread tokio runtime) that serves Prometheus metrics,
//! health probes, inspection of presence state and live configuration. It
//! reaches the shards only by message (`runtime::Control`); the SIP hot path
//! takes no lock and shares no cache line for it.
//!
//! Endpoints are listed in `routes::ROUTES` and described in `openapi.yaml`.
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod conn_guard;
pub mod guard_metrics;
pub mod http;
pub mod metrics;
pub mod routes;
pub mod rules_writer;
pub mod shards;
pub mod snapshot;
pub mod store_metrics;
pub mod summary;
pub mod xcap;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use presence_runtime::Control;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Semaphore};

pub use auth::{read_token_file, Access, AuthPolicy, Refusal, TokenFileError};

/// The JSON library the API speaks, for clients in this workspace (the
/// end-to-end tests) that would otherwise need their own dependency on it.
#[doc(hidden)]
pub use serde_json;

/// Changes the process's log filter; `Err` carries why a filter is invalid.
/// Given by the binary so this crate does not depend on tracing-subscriber.
pub type LogFilterSetter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The process's log filter: the one in force at start and how to change it.
#[derive(Clone)]
pub struct LogControl {
    /// The filter in force at start.
    pub initial: String,
    /// Changes the filter.
    pub set: LogFilterSetter,
}

/// How the management plane runs.
#[derive(Clone)]
pub struct MgmtOptions {
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// Bearer token for writes (and for reads off loopback). `None` refuses every write.
    pub token: Option<String>,
    /// How long a shard may take to answer (also the readiness bound).
    pub shard_timeout: Duration,
    /// The process's log filter, for `PUT /v1/config/log` (`None`: not changeable).
    pub log: Option<LogControl>,
    /// Connection limits and timeouts (`conn_guard`).
    pub limits: conn_guard::ConnLimits,
    /// Directory where authorization rules changes are stored (`None`: in memory only).
    pub rules_dir: Option<std::path::PathBuf>,
    /// The data directory's store, for its metrics (`None`: no durable state).
    pub store: Option<std::sync::Arc<presence_runtime::store::embedded::Store>>,
}

impl MgmtOptions {
    /// Defaults (no token, 1 s shard timeout, 64 connections, rules in memory) on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        MgmtOptions {
            listen,
            token: None,
            shard_timeout: Duration::from_secs(1),
            log: None,
            limits: conn_guard::ConnLimits::default(),
            rules_dir: None,
            store: None,
        }
    }
}

/// Why the management plane did not start.
#[derive(Debug, thiserror::Error)]
pub enum MgmtError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr} for the management plane: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the bind reported.
        source: std::io::Error,
    },
    /// The management thread or its runtime could not be created.
    #[error("cannot start the management plane: {0}")]
    Start(std::io::Error),
}

/// A running management plane; stopped by `shutdown` (or when dropped).
pub struct MgmtHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MgmtHandle {
    /// The bound address (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting, drop open connections and wait for the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MgmtHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Bind the listen address and serve on a new thread. `controls` is one
/// control channel per shard, indexed by shard id (`ServerHandle::controls`).
pub fn start(
    options: MgmtOptions,
    controls: Vec<crossbeam::channel::Sender<Control>>,
) -> Result<MgmtHandle, MgmtError> {
    let bind_error = |source| MgmtError::Bind {
        addr: options.listen,
        source,
    };
    // Bound here, not on the thread, so a busy port is reported to the caller.
    let listener = std::net::TcpListener::bind(options.listen).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let auth = AuthPolicy::new(options.token.clone(), local_addr);
    if auth.reads_need_token() && !auth.has_token() {
        tracing::warn!(
            %local_addr,
            "the management plane listens beyond loopback without --mgmt-token-file: everything but /healthz and /readyz will be refused"
        );
    }
    let connections = conn_guard::ConnGuard::new(options.limits);
    let state = Arc::new(http::State {
        connections: connections.clone(),
        shards: shards::ShardLink::new(controls, options.shard_timeout),
        auth,
        log_filter: Mutex::new(options.log.as_ref().map(|l| l.initial.clone()).unwrap_or_default()),
        log: options.log,
        started: std::time::Instant::now(),
        rules: rules_writer::RulesWriter::new(options.rules_dir.clone()),
        store: options.store.clone(),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MgmtError::Start)?;
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("mgmt".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, state, connections, stopped).await,
                    Err(error) => tracing::error!(%error, "management plane cannot use its socket"),
                }
            });
        })
        .map_err(MgmtError::Start)?;
    Ok(MgmtHandle {
        local_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Refusals (503) being written at once; beyond this a refused connection
/// is closed without an answer, so a flood cannot pile up tasks.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<http::State>,
    connections: Arc<conn_guard::ConnGuard>,
    mut stopped: oneshot::Receiver<()>,
) {
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let header_timeout = connections.limits().header_timeout;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(%error, "management plane accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ticket = match connections.admit(peer.ip()) {
            Ok(ticket) => Arc::new(ticket),
            Err(refused) => {
                tracing::debug!(%peer, ?refused, "management connection refused");
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream).await;
                        drop(permit);
                    });
                }
                continue;
            }
        };
        let state = state.clone();
        let task = tokio::spawn(async move {
            let in_service = ticket.clone();
            let service = service_fn(move |request| {
                let state = state.clone();
                let ticket = in_service.clone();
                async move {
                    ticket.request_started();
                    let response = api::handle(&state, request).await;
                    ticket.request_finished();
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "management connection ended with an error");
                    }
                }
                () = ticket.evicted() => {
                    tracing::debug!(%peer, "management connection closed to make room");
                }
            }
        });
        drop(task);
        // Let the new connection read its request head before the next
        // accept: under a flood of connections from one source, a scrape
        // that has sent its request is then busy (never evicted) before the
        // flood can push it out.
        tokio::task::yield_now().await;
    }
}

/// Answer 503 to a connection that cannot be admitted, then close it after
/// reading what it sent (closing with unread input would reset the
/// connection and could destroy the answer), all within a second.
async fn refuse(mut stream: tokio::net::TcpStream) {
    let exchange = async {
        let _ = stream.write_all(conn_guard::REFUSAL).await;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 1024];
        let mut drained = 0usize;
        while drained < 16 << 10 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), exchange).await;
}
