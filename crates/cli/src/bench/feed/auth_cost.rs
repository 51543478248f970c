//! What authentication costs a feed: two aggregators in this process on the stack's stores,
//! the same but for `auth.enabled`, read by the same warm load in alternating rounds (with,
//! without, without, with, …) so that a drift of the machine's speed favours neither.

use std::sync::{atomic::AtomicU64, Arc};

use anyhow::Context;
use shardfeed_proto::auth::Bearer;
use shardfeed_server::Settings;

use super::dataset::Dataset;
use super::ops::grpc_ops;
use super::FeedBenchArgs;
use crate::client::{Channels, TlsFlags};
use crate::measure::{closed_loop, Summary, Timing};

pub const WITH_LABEL: &str = "in-process, auth on";
pub const WITHOUT_LABEL: &str = "in-process, auth off";

/// One aggregator of this process, stopped on drop.
struct Aggregator {
    channels: Channels,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Aggregator {
    async fn start(
        settings: &Settings,
        auth: bool,
        channels: usize,
        bearer: &Bearer,
    ) -> anyhow::Result<Self> {
        let mut settings = settings.clone();
        settings.aggregator.listen_addr = "127.0.0.1:0".parse().expect("an address");
        settings.aggregator.metrics_addr = "127.0.0.1:0".parse().expect("an address");
        settings.auth.enabled = auth;
        let scheme = if settings.grpc.tls_identity_files().is_some() {
            "https"
        } else {
            "http"
        };
        let app = shardfeed_aggregator::Application::build(settings)
            .await
            .context("starting an in-process aggregator (auth cost)")?;
        let url = format!("{scheme}://{}", app.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let channels = Channels::connect(
            &url,
            &TlsFlags::from_env(),
            channels,
            "in-process aggregator",
            bearer,
        )
        .await?;
        Ok(Aggregator {
            channels,
            stop: Some(stop),
            task,
        })
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), &mut self.task).await;
    }
}

/// `(with, without)` per round.
pub async fn measure(
    args: &FeedBenchArgs,
    settings: &Settings,
    bearer: &Bearer,
    data: &Arc<Dataset>,
    timing: Timing,
) -> anyhow::Result<Vec<(Summary, Summary)>> {
    let concurrency = args.concurrency as usize;
    let channels = args.channels as usize;
    let with = Aggregator::start(settings, true, channels, bearer).await?;
    let without = Aggregator::start(settings, false, channels, bearer).await?;
    let mut rounds = Vec::new();
    for round in 1..=args.latency_rounds {
        eprintln!(
            "bench feed: authentication cost, round {round}/{}: {concurrency} workers, auth on \
             and off",
            args.latency_rounds
        );
        let served = Arc::new(AtomicU64::new(0));
        let run = |auth: bool| {
            let (label, target) = if auth {
                (WITH_LABEL, &with)
            } else {
                (WITHOUT_LABEL, &without)
            };
            closed_loop(
                label,
                grpc_ops(&target.channels, data, concurrency, &served),
                timing,
            )
        };
        let (on, off) = if round % 2 == 1 {
            let on = run(true).await?;
            (on, run(false).await?)
        } else {
            let off = run(false).await?;
            (run(true).await?, off)
        };
        rounds.push((on, off));
    }
    with.stop().await;
    without.stop().await;
    Ok(rounds)
}

/// Feeds/s with ÷ without authentication of a round.
pub fn ratio((on, off): &(Summary, Summary)) -> Option<f64> {
    (off.ops_per_s > 0.0).then(|| on.ops_per_s / off.ops_per_s)
}
