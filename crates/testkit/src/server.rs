//! Running a service under test in-process, on its own port, with a handle to stop it.

use std::{future::Future, net::SocketAddr, pin::Pin};

use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// The shutdown signal handed to a service's `run_until_stopped`.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server running in this test process, and a channel to it. Dropping it stops the server.
pub struct InProcessServer {
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcessServer {
    /// Spawns `run(shutdown)` (e.g. `|s| app.run_until_stopped(s)`) for a server bound to
    /// `addr`, and connects to it.
    pub async fn start<F, Fut>(addr: SocketAddr, run: F) -> anyhow::Result<InProcessServer>
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Box::pin(async {
            let _ = stopped.await;
        })));
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        Ok(InProcessServer {
            channel,
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
