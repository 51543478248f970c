//! The post id scheme shared by the write and the read path:
//! `post_id = (ms since POST_ID_EPOCH_MS) << 22 | (sequence mod 2^22)` (see migrations/V2).

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
