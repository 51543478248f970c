//! Ids: [`UserId`] and [`PostId`], what the API accepts as an id (positive: 0 is what an
//! unset proto field reads as), and the post id scheme shared by the write and the read path:
//! `post_id = (ms since POST_ID_EPOCH_MS) << 22 | (sequence mod 2^22)` (see migrations/V2).

use std::fmt;

/// A user id: positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(i64);

/// A post id: positive, its creation time in the high bits ([`post_time_ms`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PostId(i64);

/// A value that is no id (zero or negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnId(pub i64);

impl fmt::Display for NotAnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a positive id", self.0)
    }
}

impl std::error::Error for NotAnId {}

macro_rules! id_type {
    ($name:ident) => {
        impl $name {
            /// The wire value.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = NotAnId;

            fn try_from(raw: i64) -> Result<Self, NotAnId> {
                if raw > 0 {
                    Ok(Self(raw))
                } else {
                    Err(NotAnId(raw))
                }
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(UserId);
id_type!(PostId);

impl PostId {
    /// The creation time of the post, in ms since the Unix epoch.
    pub fn time_ms(self) -> i64 {
        post_time_ms(self.0)
    }
}

/// 2020-01-01T00:00:00Z in ms since the Unix epoch.
pub const POST_ID_EPOCH_MS: i64 = 1_577_836_800_000;

/// Bits of a post id below its time.
pub const POST_ID_TIME_SHIFT: u32 = 22;

/// The low bits of a post id: its sequence value.
pub const POST_ID_SEQ_MASK: i64 = (1 << POST_ID_TIME_SHIFT) - 1;

/// The post id of a post created at `time_ms` (ms since the Unix epoch) with sequence value
/// `seq` (only its low 22 bits are kept): what migrations/V2 computes in SQL.
pub fn post_id(time_ms: i64, seq: i64) -> i64 {
    ((time_ms - POST_ID_EPOCH_MS) << POST_ID_TIME_SHIFT) | (seq & POST_ID_SEQ_MASK)
}

/// The creation time of `post_id`, in ms since the Unix epoch.
pub fn post_time_ms(post_id: i64) -> i64 {
    (post_id >> POST_ID_TIME_SHIFT) + POST_ID_EPOCH_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive() {
        assert_eq!(UserId::try_from(7).map(UserId::get), Ok(7));
        assert_eq!(UserId::try_from(0), Err(NotAnId(0)));
        assert_eq!(PostId::try_from(-3), Err(NotAnId(-3)));
        let id = PostId::try_from(post_id(1_790_000_000_123, 9)).unwrap();
        assert_eq!(id.time_ms(), 1_790_000_000_123);
        assert_eq!(i64::from(id), id.get());
    }

    #[test]
    fn the_time_is_in_the_high_bits() {
        let time_ms = 1_790_000_000_123;
        let id = ((time_ms - POST_ID_EPOCH_MS) << POST_ID_TIME_SHIFT) | 4_194_303;
        assert_eq!(post_time_ms(id), time_ms);
        assert!(id < ((time_ms + 1 - POST_ID_EPOCH_MS) << POST_ID_TIME_SHIFT));
        assert_eq!(post_id(time_ms, 4_194_303), id);
    }

    #[test]
    fn composed_ids_keep_the_low_sequence_bits_and_order_by_time() {
        assert_eq!(post_id(POST_ID_EPOCH_MS + 1, 5), (1 << 22) | 5);
        assert_eq!(post_id(POST_ID_EPOCH_MS, (1 << 22) + 7), 7);
        let t = 1_795_000_000_123;
        for seq in [0, 1, 4_194_303, 4_194_304, 123_456_789] {
            let id = post_id(t, seq);
            assert_eq!(post_time_ms(id), t);
            assert_eq!(id & POST_ID_SEQ_MASK, seq % (1 << 22));
        }
        assert!(post_id(t + 1, 0) > post_id(t, POST_ID_SEQ_MASK));
    }
}
