//! `herald check URL`: a battery of deliveries against a service's webhook endpoint that
//! tells whether it copes with real-world delivery: a normal event, forged, stale and
//! unsigned ones (with `--secret`), a repeated id, an oversized body, a hundred at once,
//! and the delivery timeout. Prints a table, writes JUnit XML for CI (`--junit`), and
//! exits with the number of failures.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use futures_util::future::join_all;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

use crate::delivery::root_cause;
use crate::delivery::signature::sign;
use crate::hub::Secret;
use crate::wire::{
    TOPIC_HEADER, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER,
};

/// Deliveries sent at once by the concurrency check.
const CONCURRENT: usize = 100;
/// The longest answer read: a receiver's acknowledgement is a few bytes, and one that
/// streams without end must not fill this process's memory.
const MAX_ANSWER: usize = 1024 * 1024;
/// The oversized body: past what any webhook sender sends, and what Herald accepts by
/// default.
const OVERSIZED: usize = 8 * 1024 * 1024;
/// How old the stale delivery's timestamp is: twice the usual tolerance.
const STALE_BY: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The service's webhook endpoint, e.g. http://127.0.0.1:8080/event.
    pub url: url::Url,
    /// The secret the service verifies signatures with: adds the checks that forged,
    /// stale and unsigned deliveries are refused.
    #[arg(long, value_name = "whsec_...")]
    pub secret: Option<Secret>,
    /// How long a delivery may take, as a hub would wait (Herald's default is 10s).
    #[arg(long, default_value = "10s", value_parser = crate::values::positive_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Also write the results as JUnit XML here, for CI.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// One check's result: `None` when skipped, with why.
struct Outcome {
    name: &'static str,
    passed: Option<bool>,
    reason: String,
}

struct Checker {
    http: reqwest::Client,
    args: CheckArgs,
    /// Distinguishes this run's webhook ids from any other's.
    run: u64,
    slowest: Duration,
}

/// What one delivery got: a status and how long it took, or no answer.
type Answer = Result<(StatusCode, Duration), String>;

pub(super) async fn run(args: CheckArgs) -> anyhow::Result<std::process::ExitCode> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(args.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut checker = Checker {
        http,
        run: getrandom::u64().unwrap_or(0),
        slowest: Duration::ZERO,
        args,
    };
    let results = checker.all().await;
    let failures = results.iter().filter(|r| r.passed == Some(false)).count();
    print_table(&checker.args.url, &results);
    if let Some(path) = &checker.args.junit
        && let Err(err) = std::fs::write(path, junit(&checker.args.url, &results))
    {
        // Said, but not in the exit status: that is the number of failed checks.
        eprintln!("herald check: cannot write {}: {err}", path.display());
    }
    Ok(std::process::ExitCode::from(failures.min(100) as u8))
}

impl Checker {
    async fn all(&mut self) -> Vec<Outcome> {
        let mut results = Vec::new();
        let normal = self.deliver(1, self.event(1), Signing::Valid).await;
        results.push(expect_success("answers a normal event with 2xx", &normal));
        let signed_only = |name| Outcome {
            name,
            passed: None,
            reason: "skipped: give --secret to check signatures".to_owned(),
        };
        if self.args.secret.is_some() {
            for (name, signing) in [
                ("refuses a bad signature with 4xx", Signing::Forged),
                (
                    "refuses a stale timestamp (10 minutes old) with 4xx",
                    Signing::Stale,
                ),
                (
                    "refuses a delivery without signature headers with 4xx",
                    Signing::None,
                ),
            ] {
                // Each its own id: a receiver that drops repeats before verifying must
                // still be seen to refuse each.
                let n = 10 + signing as u64;
                let answer = self.deliver(n, self.event(n), signing).await;
                results.push(expect_refusal(name, &answer));
            }
        } else {
            results.push(signed_only("refuses a bad signature with 4xx"));
            results.push(signed_only(
                "refuses a stale timestamp (10 minutes old) with 4xx",
            ));
            results.push(signed_only(
                "refuses a delivery without signature headers with 4xx",
            ));
        }
        // The same message again, as a retry after a lost answer sends it.
        let again = self.deliver(1, self.event(1), Signing::Valid).await;
        results.push(expect_success(
            "acknowledges a repeated webhook-id with 2xx",
            &again,
        ));
        let big = self.deliver(3, big_event(), Signing::Valid).await;
        results.push(oversized(&big));
        let many = join_all((0..CONCURRENT).map(|n| {
            let id = 100 + n as u64;
            self.deliver(id, self.event(id), Signing::Valid)
        }))
        .await;
        let bad: Vec<String> = many
            .iter()
            .filter_map(|answer| match answer {
                Ok((status, _)) if status.is_success() => None,
                Ok((status, _)) => Some(status.to_string()),
                Err(why) => Some(why.clone()),
            })
            .collect();
        for answer in many.iter().chain([&normal, &again]).flatten() {
            self.slowest = self.slowest.max(answer.1);
        }
        results.push(Outcome {
            name: "copes with 100 concurrent deliveries",
            passed: Some(bad.is_empty()),
            reason: match bad.first() {
                None => format!("all {CONCURRENT} answered 2xx"),
                Some(first) => format!("{} of {CONCURRENT} failed, e.g. {first}", bad.len()),
            },
        });
        let timed_out = [&normal, &again]
            .into_iter()
            .chain(&many)
            .any(|a| matches!(a, Err(why) if why.contains("timed out")));
        let answered = [&normal, &again]
            .into_iter()
            .chain(&many)
            .any(Result::is_ok);
        results.push(Outcome {
            name: "answers within the delivery timeout",
            passed: Some(answered && !timed_out && self.slowest < self.args.timeout),
            reason: if timed_out {
                format!("a delivery got no answer within {:?}", self.args.timeout)
            } else if !answered {
                "no delivery was answered, so none was timed".to_owned()
            } else {
                format!(
                    "slowest {:.1} ms of {:?} allowed",
                    self.slowest.as_secs_f64() * 1000.0,
                    self.args.timeout
                )
            },
        });
        results
    }

    fn event(&self, n: u64) -> Vec<u8> {
        format!(
            r#"{{"type":"herald.check","id":"evt_{:016x}_{n}","data":{{"order":{n},"note":"sent by herald check"}}}}"#,
            self.run
        )
        .into_bytes()
    }

    async fn deliver(&self, n: u64, body: Vec<u8>, signing: Signing) -> Answer {
        let id = format!("msg_check_{:016x}_{n}", self.run);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(TOPIC_HEADER, HeaderValue::from_static("herald.check"));
        let timestamp = match signing {
            Signing::Stale => now.saturating_sub(STALE_BY.as_secs()),
            _ => now,
        };
        // The id always, as a hub sends it (the repeat check depends on it); the
        // timestamp and signature unless the check is of their absence.
        let mut sent_headers = vec![(WEBHOOK_ID_HEADER, id.clone())];
        if signing != Signing::None {
            sent_headers.push((WEBHOOK_TIMESTAMP_HEADER, timestamp.to_string()));
        }
        if let (Some(secret), false) = (&self.args.secret, signing == Signing::None) {
            let signed: &[u8] = match signing {
                // Signed over other bytes: a well-formed signature that does not match.
                Signing::Forged => b"forged",
                _ => &body,
            };
            sent_headers.push((
                WEBHOOK_SIGNATURE_HEADER,
                sign(secret, &id, timestamp, signed),
            ));
        }
        for (name, value) in sent_headers {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(name, value);
            }
        }
        let started = Instant::now();
        let sent = self
            .http
            .post(self.args.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(mut response) => {
                let status = response.status();
                // Read to the end, so the time includes the answer, as a hub's does; an
                // answer that breaks off is no answer, and one that does not end is not
                // read whole (nor kept: only counted).
                let mut read = 0usize;
                loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            read += chunk.len();
                            if read > MAX_ANSWER {
                                return Err(format!(
                                    "{status}, then an answer that went on past {} KiB; answer \
                                     with a short body (a hub keeps only the first 64 KiB)",
                                    MAX_ANSWER / 1024
                                ));
                            }
                        }
                        Ok(None) => break Ok((status, started.elapsed())),
                        Err(err) if err.is_timeout() => {
                            break Err(format!("timed out after {:?}", self.args.timeout));
                        }
                        Err(err) => {
                            break Err(format!("{status}, then the answer broke off: {err}"));
                        }
                    }
                }
            }
            Err(err) if err.is_timeout() => Err(format!("timed out after {:?}", self.args.timeout)),
            Err(err) => Err(root_cause(&err)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signing {
    Valid,
    Forged,
    Stale,
    None,
}

fn big_event() -> Vec<u8> {
    let mut body = br#"{"type":"herald.check","padding":""#.to_vec();
    body.resize(OVERSIZED, b'x');
    body.extend_from_slice(br#""}"#);
    body
}

/// An 8 MiB body may be taken (2xx) or refused with 413. A receiver that refuses by
/// closing the connection before the body is sent is refusing too, though a 413 read in
/// time would say why; an error status or no answer at all is a failure.
fn oversized(answer: &Answer) -> Outcome {
    let name = "accepts or cleanly refuses (413) an 8 MiB body";
    match answer {
        Ok((status, _)) if status.is_success() || *status == StatusCode::PAYLOAD_TOO_LARGE => {
            Outcome {
                name,
                passed: Some(true),
                reason: status.to_string(),
            }
        }
        Err(why) if is_closed(why) => Outcome {
            name,
            passed: Some(true),
            reason: format!("closed the connection while the body was sent ({why})"),
        },
        other => failed(name, other),
    }
}

fn is_closed(why: &str) -> bool {
    ["Broken pipe", "Connection reset", "connection closed"]
        .iter()
        .any(|sign| why.contains(sign))
}

fn expect_success(name: &'static str, answer: &Answer) -> Outcome {
    match answer {
        Ok((status, took)) if status.is_success() => Outcome {
            name,
            passed: Some(true),
            reason: format!("{status} in {:.1} ms", took.as_secs_f64() * 1000.0),
        },
        other => failed(name, other),
    }
}

fn expect_refusal(name: &'static str, answer: &Answer) -> Outcome {
    match answer {
        Ok((status, _)) if status.is_client_error() => Outcome {
            name,
            passed: Some(true),
            reason: status.to_string(),
        },
        Ok((status, _)) if status.is_success() => Outcome {
            name,
            passed: Some(false),
            reason: format!("{status}: accepted; anyone could send it events"),
        },
        other => failed(name, other),
    }
}

fn failed(name: &'static str, answer: &Answer) -> Outcome {
    Outcome {
        name,
        passed: Some(false),
        reason: match answer {
            Ok((status, _)) => status.to_string(),
            Err(why) => why.clone(),
        },
    }
}

fn print_table(url: &url::Url, results: &[Outcome]) {
    println!("herald check {url}");
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for result in results {
        let mark = match result.passed {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "skip",
        };
        println!("  {mark}  {:<width$}  {}", result.name, result.reason);
    }
    let failures = results.iter().filter(|r| r.passed == Some(false)).count();
    let passed = results.iter().filter(|r| r.passed == Some(true)).count();
    println!(
        "{passed} passed, {failures} failed, {} skipped",
        results.len() - passed - failures
    );
}

/// JUnit XML, as CI systems read it: one test case per check. Written by hand: it is a
/// dozen lines, where a crate would bring a whole XML writer.
fn junit(url: &url::Url, results: &[Outcome]) -> String {
    let failures = results.iter().filter(|r| r.passed == Some(false)).count();
    let skipped = results.iter().filter(|r| r.passed.is_none()).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        r#"<testsuite name="herald check {}" tests="{}" failures="{failures}" skipped="{skipped}">"#,
        escape(url.as_str()),
        results.len()
    );
    for result in results {
        let _ = write!(
            xml,
            r#"  <testcase classname="herald.check" name="{}">"#,
            escape(result.name)
        );
        match result.passed {
            Some(true) => {}
            Some(false) => {
                let _ = write!(xml, r#"<failure message="{}"/>"#, escape(&result.reason));
            }
            None => {
                let _ = write!(xml, r#"<skipped message="{}"/>"#, escape(&result.reason));
            }
        }
        xml.push_str("</testcase>\n");
    }
    xml.push_str("</testsuite>\n");
    xml
}

/// Text as an XML 1.0 attribute value: markup escaped, white space kept as references
/// (a parser would turn it into spaces), and the control characters XML forbids left out.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}
