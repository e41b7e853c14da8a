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
//! [`MAX_OUTPUT`] bytes, and nothing can be read from outside (no loader).

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
}

/// A checked template, ready to render many times.
pub struct Template {
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
        let env = environment();
        env.template_from_str(source)
            .map_err(|err| TemplateError::Syntax(describe(&err)))?;
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
            .render_str(&self.source, context! { seq => seq })
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
            include_str!("../assets/templates/order-created.json"),
            include_str!("../assets/templates/user-signed-up.json"),
            include_str!("../assets/templates/deployment-finished.json"),
            include_str!("../assets/templates/ping.json"),
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
}
