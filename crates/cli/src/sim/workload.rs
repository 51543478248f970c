//! The simulated population: the follow graph drawn from the popularity law, and the
//! plain-language description of the workload the report opens with.

use fred::interfaces::ClusterInterface;
use fred::util::redis_keyslot;
use rand::Rng;
use shardfeed_cache::CacheLayout;

use super::run::{SimArgs, World, PAGE};
use crate::popularity::Popularity;

/// Whom each user follows (by rank: rank 0 is the most popular author). Each user follows
/// `mean` authors on average (at least one, at most all others), drawn by popularity without
/// repetition, never themselves.
pub fn follow_graph(mean: usize, zipf: &Popularity, rng: &mut impl Rng) -> Vec<Vec<usize>> {
    let n = zipf.ranks();
    let max = n.saturating_sub(1);
    (0..n)
        .map(|user| {
            // Spread around the mean (half to one and a half times it).
            let low = (mean / 2).max(1);
            let high = (mean + mean / 2).max(low);
            let want = rng.gen_range(low..=high).min(max);
            let mut followees = Vec::with_capacity(want);
            let mut tries = 0;
            while followees.len() < want && tries < want * 50 {
                tries += 1;
                let author = zipf.sample(rng);
                if author != user && !followees.contains(&author) {
                    followees.push(author);
                }
            }
            followees
        })
        .collect()
}

/// Plain-language lines on what the workload does and where the popular authors live.
pub fn describe(args: &SimArgs, world: &World, graph: &[Vec<usize>]) -> Vec<String> {
    let mut followers = vec![0usize; graph.len()];
    for followees in graph {
        for f in followees {
            followers[*f] += 1;
        }
    }
    let layout = CacheLayout::new(world.settings.redis.namespace.clone());
    let routing = world.redis.cached_cluster_state();
    let mut notes = vec![
        format!(
            "{:.0}% of requests are profile views (GetUserTimeline, page {PAGE}) of an author drawn by Zipf({}): \
             the most popular author's page gets {:.0}% of all views, the top three {:.0}%. Every view reads \
             one author's keys, so views of one author all land on the one master that owns its slot.",
            args.view_share,
            args.view_zipf,
            world.views.share(0) * 100.0,
            (0..3).map(|r| world.views.share(r)).sum::<f64>() * 100.0,
        ),
        format!(
            "{:.0}% are home feeds (GetHomeFeed, page {PAGE}) of a uniformly random user: each followee costs \
             one read on its own master, so feeds spread over every master and no author dominates through \
             feeds alone.",
            args.feed_share
        ),
        format!(
            "{:.0}% are posts (CreatePost) by an author drawn by follower popularity (Zipf({})): hot authors \
             post most, so their cached timelines keep changing.",
            args.post_share, args.follow_zipf
        ),
    ];
    for (rank, id) in world.users.iter().take(3).enumerate() {
        let slot = redis_keyslot(layout.meta(*id).as_bytes());
        let node = routing
            .as_ref()
            .and_then(|r| r.get_server(slot))
            .map_or_else(|| "?".to_owned(), |s| s.to_string());
        notes.push(format!(
            "Popularity rank {}: user {id}, {} followers, {:.1}% of views, slot {slot} on master {node}.",
            rank + 1,
            followers[rank],
            world.views.share(rank) * 100.0
        ));
    }
    notes.push(
        "Both runs use an aggregator that the simulation starts in-process with the stack's settings: \
         the first with every mitigation off, the second with all four on (near-cache, coalescing, replica reads, key replicas; the stack's ingest keeps the copies)."
            .to_owned(),
    );
    notes
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    #[test]
    fn the_graph_has_no_self_or_repeated_follows_and_favours_the_popular() {
        let zipf = Popularity::new(500, 1.0).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let graph = follow_graph(20, &zipf, &mut rng);
        let mut followers = vec![0usize; 500];
        for (user, followees) in graph.iter().enumerate() {
            assert!(!followees.contains(&user));
            let mut sorted = followees.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), followees.len());
            for f in followees {
                followers[*f] += 1;
            }
        }
        let mean = graph.iter().map(Vec::len).sum::<usize>() as f64 / 500.0;
        assert!((15.0..=25.0).contains(&mean), "{mean}");
        assert!(
            followers[0] > 400,
            "the top author is followed by most: {}",
            followers[0]
        );
        assert!(followers[0] > followers[100] * 10);
    }
}
