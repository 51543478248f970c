//! The simulated population: Zipf popularity, the follow graph drawn from it, and the
//! samplers the load workers use.

use rand::Rng;

/// Draws ranks `0..n` with probability proportional to `1 / (rank + 1)^s`.
#[derive(Debug, Clone)]
pub struct Zipf {
    /// Cumulative probabilities, ascending, the last one 1.
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        assert!(n > 0, "a Zipf law needs at least one rank");
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 0..n {
            total += 1.0 / ((rank + 1) as f64).powf(s);
            cdf.push(total);
        }
        for p in &mut cdf {
            *p /= total;
        }
        Self { cdf }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|p| *p < u).min(self.cdf.len() - 1)
    }

    /// The probability of `rank`.
    pub fn share(&self, rank: usize) -> f64 {
        let below = if rank == 0 { 0.0 } else { self.cdf[rank - 1] };
        self.cdf[rank] - below
    }
}

/// Whom each user follows (by rank: rank 0 is the most popular author). Each user follows
/// `mean` authors on average (at least one, at most `n - 1`), drawn by popularity without
/// repetition, never themselves.
pub fn follow_graph(n: usize, mean: usize, zipf: &Zipf, rng: &mut impl Rng) -> Vec<Vec<usize>> {
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

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    #[test]
    fn zipf_draws_follow_the_law() {
        let zipf = Zipf::new(1000, 1.2);
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0usize; 1000];
        let draws = 200_000;
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        for rank in [0, 1, 9] {
            let expected = zipf.share(rank) * draws as f64;
            let seen = counts[rank] as f64;
            assert!(
                (seen - expected).abs() < expected * 0.05,
                "rank {rank}: {seen} vs {expected}"
            );
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9]);
    }

    #[test]
    fn the_graph_has_no_self_or_repeated_follows_and_favours_the_popular() {
        let zipf = Zipf::new(500, 1.0);
        let mut rng = StdRng::seed_from_u64(3);
        let graph = follow_graph(500, 20, &zipf, &mut rng);
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
