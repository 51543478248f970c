//! Per-caller rate limits: a GCRA bucket (governor) per subject in each class of requests.

use std::{
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultKeyedRateLimiter, Quota, RateLimiter,
};

use super::{policy::Class, Caller, Role};
use crate::config::{self, LimitSettings};

/// The buckets of every caller; `None` when limits are off.
pub struct Limits {
    buckets: Option<Buckets>,
    checks: AtomicU64,
}

struct Buckets {
    clock: DefaultClock,
    user_reads: DefaultKeyedRateLimiter<String>,
    user_writes: DefaultKeyedRateLimiter<String>,
    service_reads: DefaultKeyedRateLimiter<String>,
    service_writes: DefaultKeyedRateLimiter<String>,
    operator: DefaultKeyedRateLimiter<String>,
}

/// Buckets of callers idle long enough to be full again are dropped this often (in checks).
const PRUNE_EVERY: u64 = 1 << 14;

fn quota(q: config::Quota) -> Quota {
    let rate = NonZeroU32::new(q.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(q.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl Limits {
    pub fn new(settings: &LimitSettings) -> Self {
        let clock = DefaultClock::default();
        let keyed = |q| RateLimiter::dashmap_with_clock(quota(q), clock.clone());
        let buckets = settings.enabled.then(|| Buckets {
            user_reads: keyed(settings.user_reads),
            user_writes: keyed(settings.user_writes),
            service_reads: keyed(settings.service_reads),
            service_writes: keyed(settings.service_writes),
            operator: keyed(settings.operator),
            clock: clock.clone(),
        });
        Limits {
            buckets,
            checks: AtomicU64::new(0),
        }
    }

    /// One request of `caller` in `class`: `Err(wait)` when over the limit, `wait` being when
    /// the next one would pass.
    pub fn check(&self, caller: &Caller, class: Class) -> Result<(), Duration> {
        let Some(b) = &self.buckets else {
            return Ok(());
        };
        let limiter = match (class, caller.role) {
            (Class::Operator, _) => &b.operator,
            (Class::Read, Role::User) => &b.user_reads,
            (Class::Write, Role::User) => &b.user_writes,
            (Class::Read, _) => &b.service_reads,
            (Class::Write, _) => &b.service_writes,
        };
        let outcome = limiter
            .check_key(&caller.subject)
            .map_err(|not_until| not_until.wait_time_from(b.clock.now()));
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            for l in [
                &b.user_reads,
                &b.user_writes,
                &b.service_reads,
                &b.service_writes,
                &b.operator,
            ] {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
        outcome
    }
}

/// The quotas, as `limits.*` names them.
pub const QUOTAS: [&str; 5] = [
    "user_reads",
    "user_writes",
    "service_reads",
    "service_writes",
    "operator",
];

/// The quota a call of `class` by a caller of `role` counts against, as `limits.*` names it.
pub fn quota_name(class: Class, role: Role) -> &'static str {
    match (class, role) {
        (Class::Operator, _) => "operator",
        (Class::Read, Role::User) => "user_reads",
        (Class::Write, Role::User) => "user_writes",
        (Class::Read, _) => "service_reads",
        (Class::Write, _) => "service_writes",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Proof;

    fn settings(enabled: bool) -> LimitSettings {
        let q = |per_second, burst| config::Quota { per_second, burst };
        LimitSettings {
            enabled,
            user_reads: q(1, 3),
            user_writes: q(1, 1),
            service_reads: q(1000, 1000),
            service_writes: q(1000, 1000),
            operator: q(1, 2),
        }
    }

    fn user(id: i64) -> Caller {
        Caller {
            subject: id.to_string(),
            role: Role::User,
            user_id: Some(id),
            proof: Proof::Token,
        }
    }

    #[test]
    fn a_burst_past_the_quota_is_refused_with_a_wait_per_caller_and_class() {
        let limits = Limits::new(&settings(true));
        for _ in 0..3 {
            limits.check(&user(1), Class::Read).unwrap();
        }
        let wait = limits.check(&user(1), Class::Read).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another caller, and another class of the same caller, have their own buckets.
        limits.check(&user(2), Class::Read).unwrap();
        limits.check(&user(1), Class::Write).unwrap();
        assert!(limits.check(&user(1), Class::Write).is_err());
    }

    #[test]
    fn limits_off_admit_everything() {
        let limits = Limits::new(&settings(false));
        for _ in 0..100 {
            limits.check(&user(1), Class::Write).unwrap();
        }
    }
}
