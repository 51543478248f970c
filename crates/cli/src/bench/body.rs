//! Post bodies for the benches: ASCII words of letters and digits.

/// `len` bytes of ASCII words: letters and digits drawn by `draw(n)` (an index below `n`), a
/// space every eighth byte, never at the end, so the body is a valid post.
pub fn ascii_body(len: usize, mut draw: impl FnMut(usize) -> usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|i| {
            if i % 8 == 7 && i + 1 < len {
                ' '
            } else {
                char::from(ALPHABET[draw(ALPHABET.len()) % ALPHABET.len()])
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_asked_length_and_are_valid_posts() {
        let mut n = 0;
        for len in [1, 2, 7, 8, 9, 100, 500] {
            let body = ascii_body(len, |m| {
                n += 1;
                n % m
            });
            assert_eq!(body.len(), len);
            assert!(!body.trim().is_empty());
            assert!(!body.ends_with(' '));
            assert!(body.chars().all(|c| c == ' ' || c.is_ascii_alphanumeric()));
        }
        assert_eq!(ascii_body(9, |_| 0), "aaaaaaa a");
    }
}
