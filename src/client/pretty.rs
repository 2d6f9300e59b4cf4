//! Indenting a JSON text for a person to read, without parsing it into a
//! tree: the keys stay in the order the server wrote them and the numbers
//! as it spelled them (a parsed object would reorder its keys). Used by
//! `roomcast api`.

/// `json` indented by two spaces a level, `{}` and `[]` left whole. Meant
/// for valid JSON; anything else comes out re-spaced but not lost.
pub fn pretty(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                skip_space(&mut chars);
                if chars.peek().is_some_and(|&next| next == '}' || next == ']') {
                    continue;
                }
                depth += 1;
                new_line(&mut out, depth);
            }
            '}' | ']' => {
                let empty = out.ends_with('{') || out.ends_with('[');
                if !empty {
                    depth = depth.saturating_sub(1);
                    new_line(&mut out, depth);
                }
                out.push(c);
            }
            ',' => {
                out.push(c);
                new_line(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

fn skip_space(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
}

fn new_line(out: &mut String, depth: usize) {
    out.push('\n');
    out.extend(std::iter::repeat_n("  ", depth));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_arrays_are_indented_in_their_own_order() {
        let text =
            r#"{"result":{"rooms":[{"room":"a","connections":2}],"empty":{},"none":[ ],"n":1.50}}"#;
        let expected = "{\n  \"result\": {\n    \"rooms\": [\n      {\n        \"room\": \"a\",\n        \"connections\": 2\n      }\n    ],\n    \"empty\": {},\n    \"none\": [],\n    \"n\": 1.50\n  }\n}";
        assert_eq!(pretty(text), expected);
    }

    #[test]
    fn strings_are_left_as_they_are() {
        let text = r#"{"s":"a, {b}: [c] \" \\","t":" x "}"#;
        assert_eq!(
            pretty(text),
            "{\n  \"s\": \"a, {b}: [c] \\\" \\\\\",\n  \"t\": \" x \"\n}"
        );
    }

    #[test]
    fn an_already_indented_text_comes_out_the_same() {
        let once = pretty(r#"{"a":[1,2],"b":{"c":null}}"#);
        assert_eq!(pretty(&once), once);
    }
}
