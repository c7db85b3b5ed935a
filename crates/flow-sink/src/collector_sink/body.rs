//! Reading a collector's answer without trusting it: a response body is read for at
//! most a few bytes and a short while, never whole. A peer that answers with an
//! endless (or endlessly slow) body costs a bounded buffer and [`BODY_READ_TIME`],
//! then the connection is dropped.

use std::time::Duration;

/// How much of a refusing response body is logged and kept (`.reason` files).
pub(crate) const BODY_SNIPPET: usize = 512;
/// How much of a `2xx` body is read so that the connection can be reused; a longer
/// body is not read on, and the connection is closed instead.
pub(crate) const ACK_BODY_LIMIT: usize = 4096;
/// The longest a response body is read for.
pub(crate) const BODY_READ_TIME: Duration = Duration::from_secs(2);

/// Reads at most `limit` bytes of `response`'s body, for at most `within`. Returns
/// what arrived and whether that was the whole body (only then can the connection be
/// reused: dropping a response whose body was not read to its end closes it).
pub(crate) async fn read_prefix(
    mut response: reqwest::Response,
    limit: usize,
    within: Duration,
) -> (Vec<u8>, bool) {
    let mut prefix = Vec::new();
    let whole = tokio::time::timeout(within, async {
        loop {
            match response.chunk().await {
                Ok(Some(part)) => {
                    let room = limit.saturating_sub(prefix.len());
                    let take = part.len().min(room);
                    prefix.extend_from_slice(&part[..take]);
                    if take < part.len() {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    (prefix, whole)
}

/// The start of a response body as text: at most [`BODY_SNIPPET`] bytes of it, read
/// for at most [`BODY_READ_TIME`], trimmed, and at most [`BODY_SNIPPET`] bytes long
/// once made valid UTF-8.
pub(crate) async fn snippet(response: reqwest::Response) -> String {
    let (prefix, _) = read_prefix(response, BODY_SNIPPET, BODY_READ_TIME).await;
    text_within(&prefix, BODY_SNIPPET)
}

/// `bytes` as trimmed text of at most `max` bytes (invalid UTF-8 replaced; cut at a
/// character boundary).
pub(crate) fn text_within(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_to_its_bound_at_a_character_boundary() {
        assert_eq!(text_within(b"  short \n", 512), "short");
        // Invalid bytes become U+FFFD (3 bytes each): still at most 512 bytes.
        let t = text_within(&[0xff; 512], 512);
        assert!(t.len() <= 512 && !t.is_empty(), "{}", t.len());
        let t = text_within("é".repeat(300).as_bytes(), 511);
        assert_eq!(t.len(), 510);
    }
}
