//! The post id scheme shared by the write and the read path:
//! `post_id = (ms since POST_ID_EPOCH_MS) << 22 | (sequence mod 2^22)` (see migrations/V2).

/// 2020-01-01T00:00:00Z in ms since the Unix epoch.
pub const POST_ID_EPOCH_MS: i64 = 1_577_836_800_000;

/// Bits of a post id below its time.
pub const POST_ID_TIME_SHIFT: u32 = 22;

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
    }
}
