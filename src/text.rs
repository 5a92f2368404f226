//! Counted nouns for messages: "1 object", "2 objects".

/// `n` and the noun, plural unless `n` is 1 (nouns that take an `s`).
pub fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The verb form for `n` subjects: `one` for a single one, `many` otherwise.
pub fn agree<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular() {
        assert_eq!(counted(1, "object"), "1 object");
        assert_eq!(counted(0, "object"), "0 objects");
        assert_eq!(
            format!("{} {}", counted(3, "object"), agree(3, "differs", "differ")),
            "3 objects differ"
        );
    }
}
