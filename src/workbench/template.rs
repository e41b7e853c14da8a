//! Payload templates: Jinja syntax (through `minijinja`) with the variables a test event
//! needs, rendered once per message.
//!
//! - `{{ seq }}`: the message's number in its run (1, 2, 3… for a burst; per publish in
//!   Compose)
//! - `{{ uuid() }}`: a new random UUID
//! - `{{ now() }}`: the time, RFC 3339 with milliseconds; `{{ now_ms() }}`: epoch ms
//! - `{{ random(1, 100) }}`: a random whole number in a range, both ends included
//! - `{{ pick(["EUR", "USD"]) }}`: one of a list, at random
//!
//! Templates come from the API too, so they run on a budget: at most [`FUEL`] steps and
//! [`MAX_OUTPUT`] bytes, and nothing can be read from outside (no loader). Parsing is
//! bounded too: at most [`MAX_OPERATORS`] operators in one tag, checked before minijinja
//! sees the text, and the parse itself on a thread of its own with a known stack
//! ([`PARSE_STACK`]), so that no nesting can overflow the caller's stack.

use std::time::SystemTime;

use minijinja::{Environment, Error, ErrorKind, Value, context};
use thiserror::Error;

/// Steps one rendering may take: plenty for a payload, and a loop that would not end
/// stops here.
const FUEL: u64 = 100_000;
/// The largest payload a template may render to.
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// The longest template accepted.
pub const MAX_SOURCE: usize = 256 * 1024;
/// Operators one tag (`{{ … }}` or `{% … %}`) may hold. minijinja bounds brackets and
/// statements (150 deep) but not chains (`- - - 1`, `x|abs|abs`, `1 + 1 + …`), whose syntax
/// tree it then walks recursively: 5,400 minus signs overflowed the HTTP thread's stack and
/// aborted the process. A payload's tags hold a handful; the JSON around them is free.
pub const MAX_OPERATORS: usize = 256;
/// The stack a template is parsed on: the deepest tree [`MAX_OPERATORS`] and minijinja's
/// own limits allow needs well under a tenth of it.
pub const PARSE_STACK: usize = 16 * 1024 * 1024;
/// The name the one template has in its environment.
const NAME: &str = "payload";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("the template is {0} bytes; at most {MAX_SOURCE} are accepted")]
    TooLong(usize),
    #[error("the template does not parse: {0}")]
    Syntax(String),
    #[error("the template failed: {0}")]
    Render(String),
    #[error("the template rendered more than {MAX_OUTPUT} bytes")]
    TooLarge,
    #[error(
        "a tag on line {line} holds more than {MAX_OPERATORS} operators; keep each {{{{ … }}}} \
         short and put data in the text around the tags"
    )]
    TooDeep { line: usize },
}

/// A checked template, ready to render many times.
pub struct Template {
    /// Holds the one compiled template, [`NAME`]: it is parsed once, not per message.
    env: Environment<'static>,
    source: String,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Template {
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        if source.len() > MAX_SOURCE {
            return Err(TemplateError::TooLong(source.len()));
        }
        if let Some(line) = overlong_tag(source) {
            return Err(TemplateError::TooDeep { line });
        }
        let owned = source.to_owned();
        // On a thread of its own whatever the caller's stack: what is parsed (and dropped,
        // when it fails) is walked recursively.
        let env = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("template-parse".into())
                .stack_size(PARSE_STACK)
                .spawn_scoped(scope, || {
                    let mut env = environment();
                    env.add_template_owned(NAME, owned)
                        .map(|()| env)
                        .map_err(|err| TemplateError::Syntax(describe(&err)))
                })
                .map_err(|err| TemplateError::Syntax(format!("no thread to parse on: {err}")))?
                .join()
                .unwrap_or_else(|_| Err(TemplateError::Syntax("the parser failed".into())))
        })?;
        Ok(Self {
            env,
            source: source.to_owned(),
        })
    }

    /// Whether `text` uses template syntax at all (a plain payload is sent as it is).
    pub fn is_template(text: &str) -> bool {
        text.contains("{{") || text.contains("{%")
    }

    /// The payload for message number `seq`.
    pub fn render(&self, seq: u64) -> Result<String, TemplateError> {
        let rendered = self
            .env
            .get_template(NAME)
            .and_then(|template| template.render(context! { seq => seq }))
            .map_err(|err| TemplateError::Render(describe(&err)))?;
        if rendered.len() > MAX_OUTPUT {
            return Err(TemplateError::TooLarge);
        }
        Ok(rendered)
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// The error and where it is, in one line.
fn describe(err: &Error) -> String {
    match err.line() {
        Some(line) => format!("{} (line {line})", err.detail().unwrap_or(&err.to_string())),
        None => err.to_string(),
    }
}

/// The line of the first tag holding more than [`MAX_OPERATORS`] operators, if any. An
/// operator is any token that can nest an expression one deeper: a symbol outside string
/// literals, or one of the word operators; a decimal point and the minus of a negative
/// number in a list are not. The tags are found as minijinja's lexer finds them: a tag
/// ends only where its brackets are closed, comments count nothing, and a raw block is
/// passed over whole, so that no tag can hide from this count and reach the parser.
fn overlong_tag(source: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut i = 0;
    loop {
        // A string or a bracket left open at the end steps past it.
        i = i.min(bytes.len());
        let open = bytes[i..]
            .windows(2)
            .position(|w| w[0] == b'{' && matches!(w[1], b'{' | b'%' | b'#'))?;
        let start = i + open;
        let kind = bytes[start + 1];
        i = start + 2;
        if kind == b'#' {
            // One left open is refused by the parser, with nothing parsed.
            i += find(&bytes[i..], b"#}")? + 2;
            continue;
        }
        if kind == b'%'
            && let Some(after) = raw_block(bytes, i)
        {
            i = after;
            continue;
        }
        let (end, operators) = scan_tag(bytes, i, kind);
        if operators > MAX_OPERATORS {
            return Some(1 + bytes[..start].iter().filter(|&&c| c == b'\n').count());
        }
        i = end;
    }
}

/// Where `needle` first stands in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// If the tag opened just before `at` is `{% raw %}`, where its `{% endraw %}` ends (the
/// end of the text if there is none): nothing between them is a tag to the lexer.
fn raw_block(bytes: &[u8], at: usize) -> Option<usize> {
    let after = basic_tag(bytes, at, b"raw")?;
    let mut i = after;
    while let Some(open) = find(&bytes[i..], b"{%") {
        i += open + 2;
        if let Some(end) = basic_tag(bytes, i, b"endraw") {
            return Some(end);
        }
    }
    Some(bytes.len())
}

/// If the text from `at` (just inside `{%`) is `name` alone, with the whitespace and the
/// whitespace control (`-`, `+`) the lexer allows around it, where its `%}` ends.
fn basic_tag(bytes: &[u8], at: usize, name: &[u8]) -> Option<usize> {
    let mut i = at;
    if matches!(bytes.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if !bytes[i.min(bytes.len())..].starts_with(name) {
        return None;
    }
    i += name.len();
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if matches!(bytes.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    bytes[i.min(bytes.len())..]
        .starts_with(b"%}")
        .then_some(i + 2)
}

/// Reads the tag whose body starts at `at` (`kind` `{` or `%`) to its end, as the lexer
/// does: the end marker counts only outside brackets and strings. Returns where it ends
/// and how many operators it holds (stopping early once past [`MAX_OPERATORS`]).
fn scan_tag(bytes: &[u8], at: usize, kind: u8) -> (usize, usize) {
    const WORDS: [&str; 7] = ["not", "and", "or", "is", "in", "if", "else"];
    let close = if kind == b'{' { b'}' } else { b'%' };
    let (mut i, mut depth, mut operators) = (at, 0usize, 0usize);
    // The last byte that was not white space: a minus after one of `[,(:` in front of
    // a digit is a negative number, not an operator.
    let mut before = b' ';
    while i < bytes.len() {
        let b = bytes[i];
        if depth == 0 && b == close && bytes.get(i + 1) == Some(&b'}') {
            return (i + 2, operators);
        }
        let next = bytes.get(i + 1).copied().unwrap_or(b' ');
        match b {
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                before = b;
                continue;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                operators += 1;
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'.' if before.is_ascii_digit() && next.is_ascii_digit() => {}
            b'-' if matches!(before, b'[' | b',' | b'(' | b':') && next.is_ascii_digit() => {}
            b'-' | b'+' | b'*' | b'/' | b'%' | b'~' | b'|' | b'.' | b'<' | b'>' | b'=' | b'!' => {
                operators += 1;
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let end = bytes[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map_or(bytes.len(), |n| i + n);
                if WORDS.iter().any(|w| w.as_bytes() == &bytes[i..end]) {
                    operators += 1;
                }
                before = bytes[end - 1];
                i = end;
                continue;
            }
            _ => {}
        }
        if operators > MAX_OPERATORS {
            return (i, operators);
        }
        if !b.is_ascii_whitespace() {
            before = b;
        }
        i += 1;
    }
    (bytes.len(), operators)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    // A misspelt variable is an error, not an empty string in the payload.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // JSON, not HTML: nothing is escaped.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_function("uuid", || uuid::Uuid::new_v4().to_string());
    env.add_function("now", || {
        humantime::format_rfc3339_millis(SystemTime::now()).to_string()
    });
    env.add_function("now_ms", || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    });
    env.add_function("random", random);
    env.add_function("pick", pick);
    env
}

fn random(low: i64, high: i64) -> Result<i64, Error> {
    if low > high {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("random({low}, {high}): the first bound must not be above the second"),
        ));
    }
    let span = high.abs_diff(low).saturating_add(1);
    let offset = random_u64() % span.max(1);
    Ok(low.wrapping_add(offset as i64))
}

/// The longest list `pick` takes: a list is made whole to be picked from, and making it
/// costs no fuel (`[0] * 100000000` would be gigabytes).
const MAX_PICK: usize = 10_000;

fn pick(items: Value) -> Result<Value, Error> {
    let len = items.len().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            "pick takes a list, such as pick([\"a\", \"b\"])",
        )
    })?;
    if len == 0 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "pick([]) has nothing to pick: give it a list such as [\"a\", \"b\"]",
        ));
    }
    if len > MAX_PICK {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("pick takes a list of at most {MAX_PICK} items, not {len}"),
        ));
    }
    let index = (random_u64() % len as u64) as usize;
    items.get_item_by_index(index)
}

fn random_u64() -> u64 {
    // Test data, not secrets: if the OS has no randomness to give, the clock will do.
    getrandom::u64().unwrap_or_else(|_| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_renders_per_message() {
        let template = Template::parse(
            r#"{"n": {{ seq }}, "id": "{{ uuid() }}", "at": "{{ now() }}", "ms": {{ now_ms() }}, "r": {{ random(5, 7) }}, "c": "{{ pick(["a", "b"]) }}"}"#,
        )
        .unwrap();
        let first: serde_json::Value = serde_json::from_str(&template.render(1).unwrap()).unwrap();
        let second: serde_json::Value = serde_json::from_str(&template.render(2).unwrap()).unwrap();
        assert_eq!(
            (first["n"].as_u64(), second["n"].as_u64()),
            (Some(1), Some(2))
        );
        assert_ne!(first["id"], second["id"]);
        assert_eq!(first["id"].as_str().unwrap().len(), 36);
        assert!(humantime::parse_rfc3339(first["at"].as_str().unwrap()).is_ok());
        assert!(first["ms"].as_u64().unwrap() > 1_700_000_000_000);
        assert!((5..=7).contains(&first["r"].as_i64().unwrap()));
        assert!(["a", "b"].contains(&first["c"].as_str().unwrap()));
        // Quotes and ampersands are not HTML-escaped.
        let plain = Template::parse(r#"{{ pick(["<a & \"b\">"]) }}"#).unwrap();
        assert_eq!(plain.render(1).unwrap(), r#"<a & "b">"#);
    }

    #[test]
    fn the_bundled_templates_render_to_json() {
        for source in [
            include_str!("../../assets/templates/order-created.json"),
            include_str!("../../assets/templates/user-signed-up.json"),
            include_str!("../../assets/templates/deployment-finished.json"),
            include_str!("../../assets/templates/ping.json"),
        ] {
            let rendered = Template::parse(source).unwrap().render(7).unwrap();
            let json: Result<serde_json::Value, _> = serde_json::from_str(&rendered);
            assert!(json.is_ok(), "{rendered}");
        }
    }

    #[test]
    fn bad_templates_say_what_is_wrong_and_hostile_ones_stop() {
        let err = Template::parse("{{ seq ").unwrap_err();
        assert!(matches!(err, TemplateError::Syntax(_)), "{err}");
        let misspelt = Template::parse("{{ sqe }}").unwrap();
        assert!(matches!(misspelt.render(1), Err(TemplateError::Render(_))));
        let bounds = Template::parse("{{ random(9, 1) }}").unwrap();
        let err = bounds.render(1).unwrap_err().to_string();
        assert!(err.contains("first bound"), "{err}");
        assert!(
            Template::parse("{{ pick([]) }}")
                .unwrap()
                .render(1)
                .is_err()
        );
        // A loop without end runs out of fuel instead of running for ever.
        let endless = Template::parse(
            "{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        assert!(endless.render(1).is_err());
        let huge = Template::parse(r#"{{ "x" * 100000000 }}"#).unwrap();
        assert!(huge.render(1).is_err());
        // A list made long for free is refused before it is made whole.
        let long = Template::parse("{{ pick([0] * 100000000) }}").unwrap();
        let err = long.render(1).unwrap_err().to_string();
        assert!(err.contains("at most"), "{err}");
        assert!(matches!(
            Template::parse(&"x".repeat(MAX_SOURCE + 1)),
            Err(TemplateError::TooLong(_))
        ));
        assert!(Template::is_template("{{ seq }}") && !Template::is_template("{ \"a\": 1 }"));
    }

    #[test]
    fn deep_expressions_are_refused_before_they_reach_the_parser() {
        // Each of these overflowed the stack of the thread that parsed it (#24).
        for hostile in [
            format!("{{{{ {}1 }}}}", "-".repeat(5_400)),
            format!("{{{{ 1{} }}}}", "+1".repeat(6_700)),
            format!("{{{{ 1{} }}}}", "|abs".repeat(11_000)),
            format!("{{% if {}x %}}{{% endif %}}", "not ".repeat(5_000)),
            format!("x\ny\n{{{{ {}1 }}}}", "- ".repeat(MAX_OPERATORS + 1)),
        ] {
            let err = Template::parse(&hostile).unwrap_err();
            assert!(matches!(err, TemplateError::TooDeep { .. }), "{err}");
        }
        let err = Template::parse(&format!("x\ny\n{{{{ {}1 }}}}", "-".repeat(300))).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        // Operators inside strings and comments, and text around the tags, are free.
        let plain = format!(
            "{}{{# {} #}}{{{{ \"{}\" }}}}",
            "-+|".repeat(10_000),
            "-".repeat(1_000),
            "-".repeat(1_000)
        );
        assert_eq!(
            Template::parse(&plain).unwrap().render(1).unwrap().len(),
            31_000
        );
        // A tag cannot hide from the count behind a bracket closing in `}}`, nor inside
        // what looks like a raw block's string (a review found both: each crashed).
        for hidden in [
            format!("{{{{ {{'a': {{}}}} and {}1 }}}}", "-".repeat(250_000)),
            format!(
                "{{% raw %}}{{{{ \"{{% endraw %}}{{{{ {}1 }}}}\"",
                "-".repeat(MAX_OPERATORS + 1)
            ),
            format!(
                "{{%- raw -%}}x{{%+ endraw +%}}{{{{ {}1 }}}}",
                "-".repeat(300)
            ),
        ] {
            let err = Template::parse(&hidden).unwrap_err();
            assert!(matches!(err, TemplateError::TooDeep { .. }), "{err}");
        }
        // A raw block's text is not counted, and numbers are not operators.
        let raw = format!("{{% raw %}}{{{{ {} }}}}{{% endraw %}}", "-".repeat(1_000));
        assert_eq!(
            Template::parse(&raw).unwrap().render(1).unwrap().len(),
            1_006
        );
        let numbers: Vec<String> = (0..1_000).map(|n| format!("-{n}.5")).collect();
        let list = format!("{{{{ pick([{}]) }}}}", numbers.join(", "));
        assert!(
            Template::parse(&list)
                .unwrap()
                .render(1)
                .unwrap()
                .ends_with(".5")
        );
        // Just under the limit parses, on its own stack, and renders.
        let deep = format!("{{{{ {}1 }}}}", "-".repeat(MAX_OPERATORS));
        assert_eq!(Template::parse(&deep).unwrap().render(1).unwrap(), "1");
    }
}
