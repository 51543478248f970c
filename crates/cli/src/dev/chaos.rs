//! `dev chaos`: pausing, killing and restarting the local Redis nodes, through the same
//! supervisor the tests break their clusters with. Only nodes recorded by `dev up` are touched.

use std::time::Duration;

use anyhow::{ensure, Context};
use clap::Subcommand;
use shardfeed_testkit::RedisCluster;

use super::Stack;

/// How long the cluster may take to be healthy again.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Subcommand)]
pub enum ChaosCommand {
    /// Freeze a master with SIGSTOP for a while (longer than cluster-node-timeout, 3 s, so its
    /// replica normally takes over), resume it with SIGCONT and wait for a healthy cluster.
    Pause {
        /// The master to pause [default: a random master].
        #[arg(long)]
        port: Option<u16>,
        /// How long to keep it paused.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// SIGKILL a node: it stays down until `chaos restart`.
    Kill {
        #[arg(long)]
        port: u16,
    },
    /// Start a killed node again (it rejoins with its nodes.conf) and wait for a healthy
    /// cluster.
    Restart {
        #[arg(long)]
        port: u16,
    },
}

pub async fn run(stack: &Stack, command: ChaosCommand) -> anyhow::Result<()> {
    let state = stack.state();
    let cluster = RedisCluster::find_kept(
        &state,
        &stack.redis_dir(),
        stack.redis_base_port,
        &stack.redis_credentials(),
    )?;
    // The supervisor blocks (it polls the nodes): keep it off the async threads.
    tokio::task::spawn_blocking(move || match command {
        ChaosCommand::Pause { port, seconds } => pause(&cluster, port, seconds),
        ChaosCommand::Kill { port } => {
            let addr = format!("127.0.0.1:{port}");
            cluster.kill_node(&addr)?;
            println!("==> killed {addr} (SIGKILL); `shardfeed dev chaos restart --port {port}` brings it back");
            Ok(())
        }
        ChaosCommand::Restart { port } => {
            let addr = format!("127.0.0.1:{port}");
            cluster.restart_node(&addr)?;
            cluster.wait_until_healthy(RECOVERY_TIMEOUT)?;
            println!("==> {addr} restarted; cluster healthy, masters {}", cluster.masters()?.join(" "));
            Ok(())
        }
    })
    .await?
}

fn pause(cluster: &RedisCluster, port: Option<u16>, seconds: u64) -> anyhow::Result<()> {
    cluster
        .health()
        .context("the local Redis Cluster is not healthy (`shardfeed dev up` first)")?;
    let masters = cluster.masters()?;
    let master = match port {
        Some(port) => format!("127.0.0.1:{port}"),
        None => masters[rand::random::<u32>() as usize % masters.len()].clone(),
    };
    ensure!(
        masters.contains(&master),
        "{master} is not a healthy master of the local cluster (masters: {})",
        masters.join(" ")
    );
    let replica = cluster.replicas_of(&master)?.into_iter().next();
    let watcher = replica.clone().unwrap_or_else(|| {
        masters
            .iter()
            .find(|m| **m != master)
            .cloned()
            .unwrap_or_default()
    });
    println!("masters before: {}", masters.join(" "));
    println!(
        "==> pausing master {master} with SIGSTOP for {seconds}s (cluster-node-timeout is 3s; \
         its replica is {})",
        replica.as_deref().unwrap_or("none")
    );
    cluster.pause_node(&master)?;
    // Nothing below fails before the resume: a frozen node is never left behind.
    for second in 1..=seconds {
        std::thread::sleep(Duration::from_secs(1));
        let state = cluster
            .cluster_state(&watcher)
            .unwrap_or_else(|err| format!("? ({err:#})"));
        println!("  t+{second}s  cluster_state seen by {watcher}: {state}");
    }
    cluster.resume_node(&master)?;
    println!("==> resumed {master} with SIGCONT");
    cluster
        .wait_until_healthy(RECOVERY_TIMEOUT)
        .context("the cluster did not recover")?;
    let after = cluster.masters()?;
    println!("masters after:  {}", after.join(" "));
    match replica {
        Some(replica) if after.contains(&replica) => println!(
            "==> failover happened: {replica} was promoted; {master} rejoined as its replica"
        ),
        _ => println!(
            "==> no failover: {master} is still the master (pause shorter than failure detection?)"
        ),
    }
    Ok(())
}
