//! Running a service under test in-process, on its own port, with a handle to stop it.

use std::{future::Future, net::SocketAddr, pin::Pin};

use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The shutdown signal handed to a service's `run_until_stopped`.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server running in this test process, and a channel to it. Dropping it stops the server.
pub struct InProcessServer {
    pub channel: Channel,
    /// Where the server listens, for further connections.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcessServer {
    /// Spawns `run(shutdown)` (e.g. `|s| app.run_until_stopped(s)`) for a server bound to
    /// `addr`, and connects to it in plaintext (h2c).
    pub async fn start<F, Fut>(addr: SocketAddr, run: F) -> anyhow::Result<InProcessServer>
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self::start_with(addr, None, run).await
    }

    /// [`Self::start`] for a server that serves TLS: connects to `https://addr` with `tls`.
    pub async fn start_tls<F, Fut>(
        addr: SocketAddr,
        tls: ClientTlsConfig,
        run: F,
    ) -> anyhow::Result<InProcessServer>
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self::start_with(addr, Some(tls), run).await
    }

    async fn start_with<F, Fut>(
        addr: SocketAddr,
        tls: Option<ClientTlsConfig>,
        run: F,
    ) -> anyhow::Result<InProcessServer>
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Box::pin(async {
            let _ = stopped.await;
        })));
        let channel = endpoint(addr, tls)?.connect().await?;
        Ok(InProcessServer {
            channel,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops the server as SIGTERM would and returns how it ended.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("running").await?
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An endpoint of the server at `addr`: `http://` without `tls`, `https://` with it.
pub fn endpoint(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> anyhow::Result<Endpoint> {
    Ok(match tls {
        None => Endpoint::from_shared(format!("http://{addr}"))?,
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?,
    })
}
