//! `proxy_answer`: the reading of a proxy's answer (`hooks::answer`), the
//! body of a complete response from the backend.
//!
//! Oracles: never a panic; a non-`2xx` status is refused whatever the
//! body; a result is the exact text of a value of the body (so it is JSON
//! the body contained, never more than the body); a refusal's code is in
//! the grammar and its message within the bound; a publish proxy's data,
//! when replaced, is a part of the result.

use roomcast::hooks::answer::{self, Answer, AnswerError, MAX_MESSAGE_LEN};

use crate::engine::{Rng, Target};

pub const TARGET: Target = Target {
    name: "proxy_answer",
    check,
    generate,
    dictionary: &[
        b"{\"result\":",
        b"{\"error\":{\"code\":\"",
        b"\",\"message\":\"",
        b"\"data\":",
        b"{}",
        b"1e999",
        b"\\u00e9",
        b"\\\"",
        b"[[[[[[[[",
        b"null",
    ],
    max_len: 16 * 1024,
};

fn check(input: &[u8]) {
    let mut rng = Rng::from_input(input);
    let status = rng.choose(&[200, 204, 299, 300, 404, 500]);
    let read = answer::parse(status, input);
    if !(200..300).contains(&status) {
        assert_eq!(read, Err(AnswerError::Status(status)));
        return;
    }
    match read {
        Ok(Answer::Result(result)) => {
            assert!(!result.is_empty(), "a result is a value");
            assert!(
                input.windows(result.len()).any(|w| w == &*result),
                "the result is a part of the body"
            );
            if let Ok(Some(data)) = answer::publish_data(&result) {
                assert!(result.windows(data.len().max(1)).any(|w| w == data));
            }
        }
        Ok(Answer::Error { code, message }) => {
            assert!(answer::is_valid_code(&code), "{code}");
            assert!(message.len() <= MAX_MESSAGE_LEN);
        }
        Err(_) => {}
    }
}

/// An answer: a result (an object, maybe with `data`, or any value), an
/// error, or both, sometimes broken.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let value = rng.choose(&[
        "{}",
        r#"{"data":{"a" : [1, 2.50, "\u00e9"]}}"#,
        r#"{"data":1e999}"#,
        "[1,2]",
        "null",
        r#""text""#,
        "18446744073709551616",
    ]);
    let code = rng.choose(&[
        "BANNED",
        "NOT_FOUND_2",
        "lower",
        "",
        "A_VERY_LONG_CODE_THAT_IS_OVER_32X",
    ]);
    let message = "é".repeat(rng.below(400));
    let mut out = match rng.below(4) {
        0 | 1 => format!(r#"{{"result":{value}}}"#),
        2 => format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#),
        _ => format!(r#"{{"result":{value},"error":{{"code":"{code}"}}}}"#),
    }
    .into_bytes();
    if rng.one_in(3) && !out.is_empty() {
        let at = rng.below(out.len());
        match rng.below(3) {
            0 => out[at] = b'"',
            1 => out.truncate(at),
            _ => out.splice(at..at, b" ".iter().copied()).for_each(drop),
        }
    }
    out
}
