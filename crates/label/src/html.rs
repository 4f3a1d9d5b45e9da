//! HTML escaping and the rendering of texts. Everything that came from a file or a user goes through
//! [`esc`]; nothing is ever inserted raw, so a response holding markup shows as that markup's text.

use serde_json::Value;

/// Escapes the five characters that matter in HTML text and in quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A stored text (the JSON of a string or of a `{role, content}` message list) as HTML: a string as one
/// pre-wrapped block, a conversation as one block per message headed by its role.
pub fn turns(json: &str) -> String {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::String(s)) => format!("<div class=\"text\">{}</div>", esc(&s)),
        Ok(Value::Array(msgs)) => msgs
            .iter()
            .map(|m| {
                let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
                format!(
                    "<div class=\"msg\"><div class=\"role\">{}</div><div class=\"text\">{}</div></div>",
                    esc(field("role")),
                    esc(field("content"))
                )
            })
            .collect(),
        // Not produced by the importer; shown verbatim (escaped) rather than hidden.
        _ => format!("<div class=\"text\">{}</div>", esc(json)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(esc(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        let t = turns(r#"[{"role":"user","content":"<script>"}]"#);
        assert!(t.contains("&lt;script&gt;") && !t.contains("<script>"), "{t}");
        assert_eq!(turns(r#""<b>""#), "<div class=\"text\">&lt;b&gt;</div>");
    }
}
