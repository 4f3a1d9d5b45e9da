//! Starting the server: on a background thread for tests and embedding ([`spawn`]), or in the foreground
//! until Ctrl-C for the CLI ([`serve`]).

use crate::error::{LabelError, Result};
use crate::routes::{router, App};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What `label serve` needs once the items are in the database.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub db: PathBuf,
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// K: annotators per item.
    pub per_item: usize,
    /// Bootstrap resamples for the dashboard's intervals.
    pub bootstrap: usize,
    pub seed: u64,
}

impl ServerConfig {
    /// Defaults for everything but the database: 127.0.0.1, a free port, K = 3, 1000 resamples, seed 0.
    pub fn new(db: impl Into<PathBuf>) -> Self {
        ServerConfig { db: db.into(), host: "127.0.0.1".into(), port: 0, per_item: 3, bootstrap: 1000, seed: 0 }
    }
}

/// Opens the database and binds the socket, so both kinds of failure surface before anything runs.
fn prepare(cfg: &ServerConfig) -> Result<(Arc<App>, std::net::TcpListener)> {
    if cfg.per_item == 0 {
        return Err(LabelError::Usage("--per-item: need at least 1 annotator per item".into()));
    }
    let conn = crate::db::open(&cfg.db)?;
    let items: i64 =
        conn.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0)).map_err(|e| LabelError::db(&cfg.db, e))?;
    if items == 0 {
        return Err(LabelError::Usage(format!("{}: no items to label; pass --pairs FILE", cfg.db.display())));
    }
    let listener = std::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
        .map_err(|e| LabelError::Io(format!("cannot listen on {}:{}: {e}", cfg.host, cfg.port)))?;
    listener.set_nonblocking(true).map_err(|e| LabelError::Io(e.to_string()))?;
    let app = App { db: Mutex::new(conn), per_item: cfg.per_item, bootstrap: cfg.bootstrap, seed: cfg.seed };
    Ok((Arc::new(app), listener))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| LabelError::Io(format!("cannot start the async runtime: {e}")))
}

async fn run(
    app: Arc<App>,
    listener: std::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a non-blocking std listener converts");
    if let Err(e) = axum::serve(listener, router(app)).with_graceful_shutdown(stop).await {
        eprintln!("mismatch label: server stopped: {e}");
    }
}

/// A server running on a background thread; dropping it stops the server (in-flight requests finish).
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://ip:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the server on a background thread and returns once it is listening.
pub fn spawn(cfg: &ServerConfig) -> Result<Server> {
    let (app, listener) = prepare(cfg)?;
    let addr = listener.local_addr().map_err(|e| LabelError::Io(e.to_string()))?;
    let rt = runtime()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("mismatch-label".into())
        .spawn(move || {
            rt.block_on(run(app, listener, async {
                let _ = rx.await;
            }))
        })
        .map_err(|e| LabelError::Io(format!("cannot start the server thread: {e}")))?;
    Ok(Server { addr, stop: Some(tx), thread: Some(thread) })
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM (what `kill` and service managers send), so both end
/// with a graceful shutdown: in-flight requests finish, the database closes cleanly.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the server in the foreground until Ctrl-C or SIGTERM; `ready` is called with the address once it listens.
pub fn serve(cfg: &ServerConfig, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let (app, listener) = prepare(cfg)?;
    let addr = listener.local_addr().map_err(|e| LabelError::Io(e.to_string()))?;
    let rt = runtime()?;
    ready(addr);
    rt.block_on(run(app, listener, stop_signal()));
    Ok(())
}
