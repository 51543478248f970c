//! Who gets picked: rank `r` (0-based) with weight `1/(r+1)^s`, a Zipf law; `s = 0` is uniform.
//! Shared by the feed bench (followee popularity) and the simulation (follows, views, posts).

use rand::Rng;
use rand_distr::{Distribution, Zipf};

#[derive(Debug, Clone)]
pub struct Popularity {
    zipf: Zipf<f64>,
    exponent: f64,
    /// `Σ 1/(r+1)^s` over the ranks: the law's normalising constant.
    total_weight: f64,
    ranks: usize,
}

impl Popularity {
    /// A law over `ranks` ranks (at least one) with exponent `s` (finite, at least 0).
    pub fn new(ranks: usize, exponent: f64) -> anyhow::Result<Self> {
        let zipf = Zipf::new(ranks as u64, exponent)
            .map_err(|e| anyhow::anyhow!("Zipf({exponent}) over {ranks} ranks: {e}"))?;
        let total_weight = (0..ranks).map(|r| weight(r, exponent)).sum();
        Ok(Popularity {
            zipf,
            exponent,
            total_weight,
            ranks,
        })
    }

    /// A rank in `0..ranks`.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        // Zipf draws 1..=n as a float.
        (self.zipf.sample(rng) as usize).clamp(1, self.ranks) - 1
    }

    /// The probability of `rank`.
    pub fn share(&self, rank: usize) -> f64 {
        weight(rank, self.exponent) / self.total_weight
    }

    pub fn ranks(&self) -> usize {
        self.ranks
    }
}

fn weight(rank: usize, exponent: f64) -> f64 {
    ((rank + 1) as f64).powf(-exponent)
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    #[test]
    fn draws_follow_the_law() {
        let law = Popularity::new(1000, 1.2).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0usize; 1000];
        let draws = 200_000;
        for _ in 0..draws {
            counts[law.sample(&mut rng)] += 1;
        }
        for rank in [0, 1, 9] {
            let expected = law.share(rank) * draws as f64;
            let seen = counts[rank] as f64;
            assert!(
                (seen - expected).abs() < expected * 0.05,
                "rank {rank}: {seen} vs {expected}"
            );
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9]);
        assert!(((0..1000).map(|r| law.share(r)).sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn draws_stay_in_range_and_zero_is_uniform() {
        let mut rng = StdRng::seed_from_u64(3);
        for (ranks, exponent) in [(1, 1.0), (2, 0.0), (30, 8.0), (1000, 0.5)] {
            let law = Popularity::new(ranks, exponent).unwrap();
            assert!((0..10_000).all(|_| law.sample(&mut rng) < ranks));
        }
        let steep = Popularity::new(1000, 1.5).unwrap();
        let head = (0..10_000).filter(|_| steep.sample(&mut rng) < 10).count();
        assert!(head > 5_000, "{head} of 10000 draws in the top 1%");
        let flat = Popularity::new(1000, 0.0).unwrap();
        let head = (0..10_000).filter(|_| flat.sample(&mut rng) < 10).count();
        assert!(head < 300, "{head} of 10000 draws in the top 1%");
        assert!((flat.share(0) - 0.001).abs() < 1e-12);
        assert!(Popularity::new(0, 1.0).is_err());
        assert!(Popularity::new(10, -1.0).is_err());
    }
}
