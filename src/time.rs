//! `google.protobuf.Timestamp` ↔ milliseconds and microseconds since the Unix epoch, the units
//! the stores use (post times in ms, PostgreSQL `timestamptz` in µs). Times before the epoch
//! round towards negative infinity, as `Timestamp` requires (`nanos` is never negative).

use prost_types::Timestamp;

/// The timestamp of `ms` milliseconds since the Unix epoch.
pub fn from_ms(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// The timestamp of `micros` microseconds since the Unix epoch.
pub fn from_micros(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// Milliseconds since the Unix epoch, rounded down.
pub fn to_ms(t: &Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos).div_euclid(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_on_both_sides_of_the_epoch() {
        for ms in [0, 1, 999, 1000, 1_790_000_000_123, -1, -999, -1000, -1001] {
            let t = from_ms(ms);
            assert!((0..1_000_000_000).contains(&t.nanos), "{ms}: {t:?}");
            assert_eq!(to_ms(&t), ms);
        }
        assert_eq!(
            from_ms(-1),
            Timestamp {
                seconds: -1,
                nanos: 999_000_000
            }
        );
    }

    #[test]
    fn microseconds_keep_their_precision() {
        let t = from_micros(1_790_000_000_123_456);
        assert_eq!((t.seconds, t.nanos), (1_790_000_000, 123_456_000));
        assert_eq!(to_ms(&t), 1_790_000_000_123);
        let t = from_micros(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_000));
    }
}
