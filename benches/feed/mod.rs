//! The price feed the benches share: a book of levels that stays the same
//! from one update to the next.

/// Appends book levels (`{"px","qty"}`, comma-separated) to `text` until
/// it is at least `len` bytes long.
pub fn push_levels(text: &mut String, len: usize) {
    let mut i = 0;
    while text.len() < len {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            r#"{{"px":{}.{:02},"qty":{}.{}}}"#,
            67000 + i,
            i * 7 % 100,
            i % 9,
            i % 7
        ));
        i += 1;
    }
}
