//! How a reply is cut into streamed deltas, and a rough token count for usage. Pure functions, so
//! tests can compute exactly what a turn streams.

/// Replies longer than this many words are streamed in merged chunks, so that a maximal message
/// still streams in bounded time (256 deltas x the token delay) instead of one delta per word.
pub const MAX_DELTAS: usize = 256;

/// `reply` cut into the deltas to stream: word by word, each word keeping the whitespace that
/// follows it, so concatenating the deltas gives back exactly `reply`. At most [`MAX_DELTAS`]
/// deltas: longer replies are cut into that many chunks of consecutive words.
pub fn tokens(reply: &str) -> Vec<&str> {
    let words: Vec<&str> = split_words(reply).collect();
    if words.len() <= MAX_DELTAS {
        return words;
    }
    let per_chunk = words.len().div_ceil(MAX_DELTAS);
    let mut chunks = Vec::with_capacity(MAX_DELTAS);
    let mut start = 0;
    for group in words.chunks(per_chunk) {
        let len: usize = group.iter().map(|word| word.len()).sum();
        chunks.push(&reply[start..start + len]);
        start += len;
    }
    chunks
}

/// A rough token count (whitespace-separated words), as a real provider would report usage.
pub fn count_tokens(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// Slices of `text` that each end after a run of whitespace (the last may have none).
fn split_words(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // The end of the first word, then the end of the whitespace run after it.
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let gap_end = rest[word_end..]
            .find(|c: char| !c.is_whitespace())
            .map_or(rest.len(), |offset| word_end + offset);
        let (token, tail) = rest.split_at(gap_end);
        rest = tail;
        Some(token)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_words_that_keep_their_trailing_whitespace() {
        assert_eq!(
            tokens("[a] You  said:\nhé  "),
            vec!["[a] ", "You  ", "said:\n", "hé  "]
        );
        assert_eq!(tokens("  lead"), vec!["  ", "lead"]);
        assert!(tokens("").is_empty());
    }

    #[test]
    fn tokens_concatenate_to_the_reply_even_when_merged_into_chunks() {
        let long = "word ".repeat(10 * MAX_DELTAS + 3) + "é end";
        for text in ["one", "two words", "  spaced   out  ", long.as_str()] {
            let reply = format!("[slug] You said: {text}");
            let deltas = tokens(&reply);
            assert!(deltas.len() <= MAX_DELTAS);
            assert!(deltas.iter().all(|delta| !delta.is_empty()));
            assert_eq!(deltas.concat(), reply);
        }
    }

    #[test]
    fn usage_counts_words() {
        assert_eq!(count_tokens("a b  c\n"), 3);
        assert_eq!(count_tokens(""), 0);
    }
}
