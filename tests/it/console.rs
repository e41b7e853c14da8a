//! The desktop console driven through egui_kittest: real clicks and typing on the real
//! app, over a real hub with real subscriber servers on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};
use herald::Config;
use herald::gui::{Backend, HeraldApp, Settings};
use herald::hub::{HubEvent, RemovalReason};
use herald::workbench::TestState;
use tokio::runtime::Runtime;

use crate::utils::{PATIENCE, Receiver, Reply};

struct Console {
    harness: Harness<'static, HeraldApp>,
    runtime: Runtime,
}

fn console(configure: impl FnOnce(&mut Config)) -> Console {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    configure(&mut config);
    let backend = Arc::new(Backend::start(&config, runtime.handle().clone()).unwrap());
    let ctx = egui::Context::default();
    backend.listen(config.bind, &ctx);
    let app = HeraldApp::new(backend, Settings::from_config(&config), &ctx);
    let harness = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_ui_state(|ui, app: &mut HeraldApp| app.ui_root(ui), app);
    Console { harness, runtime }
}

impl Console {
    /// Steps the UI until `done` holds, or fails the test after [`PATIENCE`].
    fn step_until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&mut Harness<'static, HeraldApp>) -> bool,
    ) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.harness.step();
            if done(&mut self.harness) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn shows(&mut self, label: &str) -> bool {
        self.harness.query_by_label(label).is_some()
    }

    /// Types a number into the drag value labelled `label`: a click makes it a text
    /// field, as it does for a person.
    fn set_number(&mut self, label: &str, text: &str) {
        use egui::accesskit::Role;
        self.harness
            .get_by_role_and_label(Role::SpinButton, label)
            .click();
        self.harness.step();
        // Clicks land where the field was drawn: a panel sized by its content settles a
        // frame later and may move it, so a click that did not take is given again.
        if let Some(field) = self
            .harness
            .query_by_role_and_label(Role::SpinButton, label)
            && !field.accesskit_node().is_focused()
        {
            field.click();
            self.harness.step();
        }
        self.harness
            .key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
        self.harness.event(egui::Event::Text(text.to_owned()));
        self.harness.key_press(egui::Key::Enter);
        self.harness.step();
        // Drawn again with the value it now holds.
        self.harness.step();
        let value = self
            .harness
            .get_by_role_and_label(Role::SpinButton, label)
            .accesskit_node()
            .numeric_value();
        assert_eq!(value, text.parse().ok(), "{label}");
    }

    /// Replaces the compose box's text by typing, as a person would.
    fn type_message(&mut self, text: &str) {
        let editor = self.harness.get_by_label("Message");
        editor.focus();
        self.harness.step();
        self.harness
            .key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
        self.harness.step();
        self.harness.get_by_label("Message").type_text(text);
        self.harness.step();
    }
}

#[test]
fn kick_removes_the_row_and_the_subscriber() {
    let mut console = console(|_| {});
    let hub = console.harness.state().hub().clone();
    hub.subscribe("127.0.0.1:9001").unwrap();
    console.step_until("the subscriber is listed", |h| {
        h.query_by_label("127.0.0.1:9001").is_some()
    });
    console.harness.get_by_label("Kick").click();
    console.step_until("the row is gone", |h| {
        h.query_by_label("127.0.0.1:9001").is_none()
    });
    assert_eq!(hub.subscriber_count(), 0);
    let kicked = hub.activity().iter().any(|a| {
        matches!(&a.event, HubEvent::Removed { address, reason: RemovalReason::Kicked } if &**address == "127.0.0.1:9001")
    });
    assert!(kicked, "the kick was not recorded: {:?}", hub.activity());
}

#[test]
fn the_filter_narrows_the_rows() {
    let mut console = console(|_| {});
    let hub = console.harness.state().hub().clone();
    for address in ["svc-a.local:1", "svc-b.local:1", "billing.local:1"] {
        hub.subscribe(address).unwrap();
    }
    console.step_until("all three are listed", |h| {
        h.query_by_label("billing.local:1").is_some()
    });
    console.harness.get_by_label("Filter").focus();
    console.harness.step();
    console.harness.get_by_label("Filter").type_text("svc");
    console.step_until("billing is filtered out", |h| {
        h.query_by_label("billing.local:1").is_none()
    });
    assert!(console.shows("svc-a.local:1"));
    assert!(console.shows("svc-b.local:1"));
}

#[test]
fn a_publish_from_the_compose_box_reaches_a_real_subscriber_and_is_logged() {
    let mut console = console(|_| {});
    let hub = console.harness.state().hub().clone();
    let mut receiver = console.runtime.block_on(Receiver::start());
    hub.subscribe(&receiver.address()).unwrap();

    console.type_message(r#"{"hello": "from the console"}"#);
    console.harness.get_by_label("Publish").click();
    console.harness.step();

    let received = console.runtime.block_on(receiver.recv());
    assert_eq!(received.body, r#"{"hello": "from the console"}"#);
    assert_eq!(received.content_type(), Some("application/json"));
    console.step_until("the log shows the delivery", |h| {
        h.query_all_by_label("1 ok").count() == 2 // the log row, and the top bar's total
    });
    assert!(
        console
            .harness
            .query_by_label_contains("queued for 1 subscriber")
            .is_some()
    );
    assert!(
        console.shows("console"),
        "the log row names the console as source"
    );

    // Selecting the row shows the payload and the delivery.
    console.harness.get_by_label("29 B").click();
    console.step_until("the details show the delivery", |h| {
        h.query_by_label_contains("200 in").is_some()
    });
    assert!(
        console
            .harness
            .query_by_label_contains("\"hello\": \"from the console\"")
            .is_some()
    );
    // A console publish starts a trace; the details name it.
    let traceparent = received.headers["traceparent"].to_str().unwrap();
    assert!(console.shows(&traceparent[3..35]), "{traceparent}");
}

#[test]
fn ctrl_enter_publishes_too() {
    let mut console = console(|_| {});
    console.type_message("{}");
    console
        .harness
        .key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Enter);
    console.harness.step();
    console.harness.step();
    assert_eq!(console.harness.state().hub().totals().messages, 1);
}

#[test]
fn invalid_json_shows_where_and_is_not_published() {
    let mut console = console(|_| {});
    console.type_message("{\"broken\": ");
    console.step_until("the JSON error shows", |h| {
        h.query_by_label_contains("Invalid JSON at line 1, column")
            .is_some()
    });
    console.harness.get_by_label("Publish").click();
    console.harness.step();
    assert_eq!(console.harness.state().hub().totals().messages, 0);
}

#[test]
fn the_test_subscriber_shows_a_round_trip() {
    let mut console = console(|_| {});
    console.harness.get_by_label("Add test subscriber").click();
    let on = |h: &mut Harness<'static, HeraldApp>| {
        let tests = h.state().test_subscribers().list();
        tests.len() == 1 && matches!(tests[0].state(), TestState::On(_))
    };
    console.step_until("the test subscriber is registered", on);
    assert_eq!(console.harness.state().hub().subscriber_count(), 1);
    // The compose box's default is a template; publish something plain.
    console.type_message(r#"{"hello": "round trip"}"#);
    console.harness.get_by_label("Publish").click();
    console.step_until("it shows the payload and what it answered", |h| {
        h.query_by_label("received 1").is_some()
            && h.query_by_label_contains(r#"{"hello": "round trip"}"#)
                .is_some()
            && h.query_by_label("answered 204").is_some()
    });
    // A panel sized by its content settles a frame later: click where Remove stays.
    console.harness.step();
    console.harness.step();
    console.harness.get_by_label("Remove").click();
    console.step_until("the test subscriber is deregistered", |h| {
        h.state().hub().subscriber_count() == 0 && h.state().test_subscribers().list().is_empty()
    });
}

#[test]
fn a_test_subscriber_failing_half_the_time_shows_retries() {
    let mut console = console(|config| {
        // Enough retries that every message gets through: all 21 attempts failing at one
        // chance in two is one in two million.
        config.retry_schedule.0 = vec![Duration::from_millis(20); 20];
    });
    console.harness.get_by_label("Add test subscriber").click();
    console.step_until("it is registered", |h| {
        h.state()
            .test_subscribers()
            .list()
            .first()
            .is_some_and(|t| t.address().is_some())
    });
    // Drawn with its controls once it is on.
    console.harness.step();
    console.set_number("fails", "50");
    let tests = console.harness.state().test_subscribers().list();
    assert_eq!(tests[0].behaviour().fail_percent, 50);
    let hub = console.harness.state().hub().clone();
    for n in 0..20 {
        hub.publish(
            herald::hub::Draft::new(format!("{n}")),
            herald::hub::Source::Console,
        )
        .unwrap();
    }
    console.step_until("every message is delivered, some after retries", |h| {
        let messages = h.state().hub().messages(None, 100);
        messages.len() == 20 && messages.iter().all(|m| m.summary().delivered == 1)
    });
    let attempts: usize = hub
        .messages(None, 100)
        .iter()
        .map(|m| m.deliveries()[0].attempts.len())
        .sum();
    // Twenty messages at one chance in two: more than twenty attempts all but surely
    // (one in a million that none failed).
    assert!(attempts > 20, "{attempts} attempts for 20 messages");
    let answered_500 = tests[0]
        .received(100)
        .iter()
        .filter(|r| r.status == Some(500))
        .count();
    assert_eq!(
        answered_500,
        attempts - 20,
        "each failed attempt was a 500 it answered"
    );
}

#[test]
fn a_busy_port_is_reported_and_another_can_be_chosen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let mut console = console(|config| config.bind = busy);
    console.step_until("the busy port is reported", |h| {
        h.query_by_label_contains("is busy").is_some()
    });
    assert!(
        console
            .harness
            .query_by_label_contains(&busy.to_string())
            .is_some()
    );

    let field = console.harness.get_by_label("Listen on");
    field.focus();
    console.harness.step();
    console
        .harness
        .key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    console
        .harness
        .get_by_label("Listen on")
        .type_text("127.0.0.1:0");
    console.harness.step();
    console.harness.get_by_label("Listen").click();
    console.step_until("it listens elsewhere", |h| {
        h.query_by_label_contains("http://127.0.0.1:").is_some()
    });
}

#[test]
fn the_inspector_shows_a_retry_countdown_and_what_the_subscriber_answered() {
    let mut console = console(|config| {
        config.retry_schedule.0 = vec![Duration::from_secs(30)];
    });
    let hub = console.harness.state().hub().clone();
    let receiver = console.runtime.block_on(Receiver::scripted(
        vec![Reply::status(500).body("boom: a stack trace")],
        Reply::status(200),
    ));
    hub.subscribe(&receiver.address()).unwrap();
    console.type_message(r#"{"order": 7}"#);
    console.harness.get_by_label("Publish").click();
    console.harness.step();
    console.step_until("the log shows it retrying", |h| {
        h.query_by_label_contains("retrying").is_some()
    });
    console.harness.get_by_label("12 B").click();
    console.step_until("the details count down to the retry", |h| {
        h.query_by_label_contains("retrying 2 of 2 in").is_some()
    });
    // Open the delivery, then its first attempt.
    console
        .harness
        .get_by_label_contains("retrying 2 of 2 in")
        .click();
    console.step_until("the attempt shows", |h| {
        h.query_by_label_contains("#1 at").is_some()
    });
    console.harness.get_by_label_contains("#1 at").click();
    console.step_until("the answer's body shows", |h| {
        h.query_by_label_contains("boom: a stack trace").is_some()
    });
    assert!(console.shows("HTTP 500"));
}

fn topics(list: &[&str]) -> Option<Vec<herald::hub::Pattern>> {
    Some(
        list.iter()
            .map(|p| herald::hub::Pattern::parse(p).unwrap())
            .collect(),
    )
}

fn text_field<'a>(
    harness: &'a Harness<'static, HeraldApp>,
    label: &'a str,
) -> egui_kittest::Node<'a> {
    harness.get_by_role_and_label(egui::accesskit::Role::TextInput, label)
}

#[test]
fn compose_previews_who_a_topic_reaches_and_publishes_on_it() {
    let mut console = console(|_| {});
    let hub = console.harness.state().hub().clone();
    let mut orders = console.runtime.block_on(Receiver::start());
    let billing = console.runtime.block_on(Receiver::start());
    let everything = console.runtime.block_on(Receiver::start());
    for (receiver, patterns) in [
        (&orders, topics(&["orders.*"])),
        (&billing, topics(&["billing.>"])),
    ] {
        let address = receiver.address();
        let subscription = herald::hub::Subscription {
            topics: patterns,
            ..herald::hub::Subscription::new(&address)
        };
        hub.subscribe(subscription).unwrap();
    }
    hub.subscribe(&everything.address()).unwrap();
    console.step_until("the preview counts the one without topics", |h| {
        h.query_by_label_contains("Reaches 1 subscriber:").is_some()
    });

    text_field(&console.harness, "Topic").focus();
    console.harness.step();
    text_field(&console.harness, "Topic").type_text("orders.created");
    console.step_until("the preview names both", |h| {
        h.query_by_label_contains("Reaches 2 subscribers:")
            .is_some()
    });
    let preview = console
        .harness
        .get_by_label_contains("Reaches 2 subscribers:")
        .accesskit_node()
        .value()
        .unwrap_or_default();
    assert!(preview.contains(&orders.address()), "{preview}");
    assert!(preview.contains(&everything.address()), "{preview}");
    assert!(!preview.contains(&billing.address()), "{preview}");

    // A topic that is none: said so, and Publish publishes nothing.
    text_field(&console.harness, "Topic").type_text("..");
    console.harness.step();
    console.step_until("the bad topic is explained", |h| {
        h.query_by_label_contains("empty token").is_some()
    });
    console.harness.get_by_label("Publish").click();
    console.harness.step();
    assert_eq!(hub.totals().messages, 0);

    text_field(&console.harness, "Topic").focus();
    console.harness.step();
    for _ in 0..2 {
        console.harness.key_press(egui::Key::Backspace);
        console.harness.step();
    }
    console.step_until("the topic is good again", |h| {
        h.query_by_label_contains("Reaches 2 subscribers:")
            .is_some()
    });
    console.harness.get_by_label("Publish").click();
    console.harness.step();
    let received = console.runtime.block_on(orders.recv());
    assert_eq!(received.headers["x-herald-topic"], "orders.created");
    let message = hub.message(1).unwrap();
    assert_eq!(
        message.topic.as_ref().map(|t| t.as_str()),
        Some("orders.created")
    );
    assert_eq!(message.subscribers, 2);
}

#[test]
fn the_topic_filter_keeps_the_messages_whose_topic_matches() {
    let mut console = console(|_| {});
    let hub = console.harness.state().hub().clone();
    for topic in ["orders.created", "billing.paid", "orders.shipped"] {
        let draft = herald::hub::Draft {
            topic: Some(herald::hub::Topic::parse(topic).unwrap()),
            ..herald::hub::Draft::new(topic.as_bytes().to_vec())
        };
        hub.publish(draft, herald::hub::Source::Console).unwrap();
    }
    hub.publish(
        herald::hub::Draft::new("plain"),
        herald::hub::Source::Console,
    )
    .unwrap();
    console.step_until("every topic is in the log", |h| {
        h.query_by_label("billing.paid").is_some() && h.query_by_label("orders.shipped").is_some()
    });
    text_field(&console.harness, "Topic filter").focus();
    console.harness.step();
    text_field(&console.harness, "Topic filter").type_text("orders.*");
    console.step_until("billing is filtered out", |h| {
        h.query_by_label("billing.paid").is_none()
    });
    assert!(console.shows("orders.created"));
    assert!(console.shows("orders.shipped"));
    assert_eq!(
        console.harness.query_all_by_label("console").count(),
        2,
        "the two orders rows only (the plain message has no topic)"
    );
}

#[test]
fn the_topics_view_lists_topics_and_loads_the_last_payload_into_compose() {
    let mut console = console(|_| {});
    let hub = console.harness.state().hub().clone();
    for body in [r#"{"n": 1}"#, r#"{"n": 2, "last": true}"#] {
        let draft = herald::hub::Draft {
            topic: Some(herald::hub::Topic::parse("orders.created").unwrap()),
            content_type: Some("application/json".to_owned()),
            ..herald::hub::Draft::new(body.as_bytes().to_vec())
        };
        hub.publish(draft, herald::hub::Source::Console).unwrap();
    }
    console
        .harness
        .get_by_role_and_label(egui::accesskit::Role::Button, "Topics")
        .click();
    console.step_until("the topic is listed with its count", |h| {
        h.query_by_label("Click a topic to load its last payload into Compose")
            .is_some()
    });
    // The log's row and the Topics window's row both say the topic; the window's is the
    // monospace one in the topics table, the last drawn.
    let rows: Vec<_> = console
        .harness
        .query_all_by_label("orders.created")
        .collect();
    assert_eq!(rows.len(), 3, "two log rows and one topic row");
    rows.last().unwrap().click();
    console.step_until("the last payload is in Compose", |h| {
        h.query_by_label_contains("loaded into Compose").is_some()
    });
    let editor = console.harness.get_by_label("Message");
    let value = editor.accesskit_node().value();
    assert_eq!(value.as_deref(), Some(r#"{"n": 2, "last": true}"#));
    let topic = text_field(&console.harness, "Topic")
        .accesskit_node()
        .value();
    assert_eq!(topic.as_deref(), Some("orders.created"));
}

#[test]
fn pause_holds_a_subscribers_deliveries_and_resume_sends_them_in_order() {
    let mut console = console(|_| {});
    let hub = console.harness.state().hub().clone();
    let mut receiver = console.runtime.block_on(Receiver::start());
    hub.subscribe(&receiver.address()).unwrap();
    console.step_until("the subscriber is listed", |h| {
        h.query_by_label("Pause").is_some()
    });
    console.harness.get_by_label("Pause").click();
    console.step_until("it shows paused", |h| h.query_by_label("Resume").is_some());
    assert!(hub.subscriber(&receiver.address()).unwrap().paused);
    for body in ["first", "second"] {
        hub.publish(herald::hub::Draft::new(body), herald::hub::Source::Console)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(receiver.drain().is_empty(), "a paused subscriber received");
    console.harness.get_by_label("Resume").click();
    console.harness.step();
    for expected in ["first", "second"] {
        assert_eq!(console.runtime.block_on(receiver.recv()).body, expected);
    }
    assert!(!hub.subscriber(&receiver.address()).unwrap().paused);
}

#[test]
fn settings_show_where_the_history_is_kept_and_forget_it() {
    let dir = crate::utils::TempDir::new("console-history");
    let path = dir.path().to_owned();
    let mut console = console(|config| config.data_dir = Some(path));
    let hub = console.harness.state().hub().clone();
    for n in 0..3 {
        let draft = herald::hub::Draft::new(format!("kept {n}"));
        hub.publish(draft, herald::hub::Source::Console).unwrap();
    }
    console.runtime.block_on(hub.flush_store()).unwrap();
    console
        .harness
        .get_by_role_and_label(egui::accesskit::Role::Button, "Settings")
        .click();
    console.step_until("the history is shown with its place", |h| {
        h.query_all_by_label_contains("3 messages").any(|label| {
            let node = label.accesskit_node();
            let text = node.label().or(node.value()).unwrap_or_default();
            text.contains(dir.arg())
        })
    });
    console.harness.get_by_label("Forget history").click();
    console.step_until("the log is empty, on disk too", |_| {
        hub.logged_messages() == 0 && hub.store_usage().messages == 0
    });
    console.step_until("the top bar says so", |h| {
        h.query_by_label_contains("History forgotten").is_some()
    });
}

#[test]
fn a_message_opened_in_compose_is_replayed_with_an_edit_to_one_subscriber() {
    let mut console = console(|_| {});
    let hub = console.harness.state().hub().clone();
    let mut chosen = console.runtime.block_on(Receiver::start());
    let mut other = console.runtime.block_on(Receiver::start());
    hub.subscribe(&chosen.address()).unwrap();
    hub.subscribe(&other.address()).unwrap();
    let draft = herald::hub::Draft {
        content_type: Some("application/json".to_owned()),
        ..herald::hub::Draft::new(&br#"{"v":1}"#[..])
    };
    let original = hub
        .publish(draft, herald::hub::Source::Console)
        .unwrap()
        .id()
        .unwrap();
    console.runtime.block_on(async {
        chosen.recv().await;
        other.recv().await;
    });
    console.step_until("the message is listed", |h| {
        h.query_by_label("7 B").is_some()
    });
    console.harness.get_by_label("7 B").click();
    console.step_until("its details show", |h| {
        h.query_by_label("Open in Compose").is_some()
    });
    console.harness.get_by_label("Open in Compose").click();
    console.step_until("Compose is replaying it", |h| {
        h.query_by_label(&format!("Replaying message {original}"))
            .is_some()
    });
    console.type_message(r#"{"v":2}"#);
    console
        .harness
        .get_by_role_and_label(egui::accesskit::Role::ComboBox, "to")
        .click();
    let address = chosen.address();
    console.step_until("the list of subscribers opens", |h| {
        h.query_all_by_label(&address).count() >= 2
    });
    // The subscribers table names it too, as a label; the list's entry is a button.
    console
        .harness
        .get_by_role_and_label(egui::accesskit::Role::Button, &address)
        .click();
    console.step_until("the replay goes to it", |h| {
        h.query_by_role_and_label(egui::accesskit::Role::ComboBox, "to")
            .is_some_and(|combo| combo.accesskit_node().value().as_deref() == Some(&*address))
    });
    console.harness.get_by_label("Publish").click();
    console.harness.step();
    let received = console.runtime.block_on(chosen.recv());
    assert_eq!(received.body, r#"{"v":2}"#);
    assert_eq!(received.content_type(), Some("application/json"));
    console.step_until("Compose says what the replay did", |h| {
        h.query_by_label_contains(&format!("Replay of message {original}: message"))
            .is_some()
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(other.drain().is_empty(), "only the subscriber picked");
    // The original now links to its replay.
    let replay = hub.message(original).unwrap().replays();
    assert_eq!(replay.len(), 1);
    console.step_until("the original's details link to its replay", |h| {
        h.query_by_label(&format!("message {}", replay[0]))
            .is_some()
    });
}

#[test]
fn compose_renders_variables_per_message_and_previews_them() {
    let mut console = console(|_| {});
    let hub = console.harness.state().hub().clone();
    let mut receiver = console.runtime.block_on(Receiver::start());
    hub.subscribe(&receiver.address()).unwrap();
    console.type_message(r#"{"n": {{ seq }}, "id": "{{ uuid() }}"}"#);
    let sample = |h: &Harness<'static, HeraldApp>, starts: &str| {
        h.query_by_role_and_label(
            egui::accesskit::Role::MultilineTextInput,
            "Rendered, as the next publish sends it",
        )
        .and_then(|n| n.accesskit_node().value())
        .is_some_and(|text| text.starts_with(starts))
    };
    console.step_until("the rendered sample shows", |h| {
        sample(h, r#"{"n": 1, "id": ""#)
    });
    let mut ids = Vec::new();
    for n in 1..=2 {
        console.harness.get_by_label("Publish").click();
        console.harness.step();
        let received = console.runtime.block_on(receiver.recv());
        let json: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
        assert_eq!(json["n"], n);
        ids.push(json["id"].as_str().unwrap().to_owned());
    }
    assert_ne!(ids[0], ids[1], "a new UUID per message");
    console.step_until("the sample moves on to the next number", |h| {
        sample(h, r#"{"n": 3, "id": ""#)
    });
    // Unticked, the braces are sent as they are.
    console.type_message(r#"{"raw": "{{ seq }}"}"#);
    console.harness.get_by_label("Variables").click();
    console.harness.step();
    console.harness.get_by_label("Publish").click();
    console.harness.step();
    let received = console.runtime.block_on(receiver.recv());
    assert_eq!(received.body, r#"{"raw": "{{ seq }}"}"#);
}

#[test]
fn a_burst_of_200_at_100_a_second_completes_with_its_progress_shown() {
    let mut console = console(|_| {});
    let hub = console.harness.state().hub().clone();
    let mut receiver = console.runtime.block_on(Receiver::start());
    hub.subscribe(&receiver.address()).unwrap();
    console.type_message(r#"{"n": {{ seq }}}"#);
    console.set_number("Burst", "200");
    console.set_number("at", "100");
    console.harness.get_by_label("Start burst").click();
    console.harness.step();
    console.step_until("the progress bar shows it running", |h| {
        h.query_by_label_contains("of 200 sent (running)").is_some()
    });
    console.step_until("it is done, every message delivered", |h| {
        h.query_by_label_contains("200 of 200 sent (done)")
            .is_some()
            && h.query_by_label("200 delivered").is_some()
    });
    let received = console.runtime.block_on(async {
        let mut all = Vec::new();
        for _ in 0..200 {
            all.push(receiver.recv().await);
        }
        all
    });
    let last: serde_json::Value = serde_json::from_slice(&received[199].body).unwrap();
    assert_eq!(last["n"], 200);
}

#[test]
fn a_starred_message_outlives_the_log_and_two_compare_side_by_side() {
    let mut console = console(|config| config.log_capacity = 2);
    let hub = console.harness.state().hub().clone();
    let publish = |body: &str| {
        let draft = herald::hub::Draft {
            content_type: Some("application/json".to_owned()),
            ..herald::hub::Draft::new(body.as_bytes().to_vec())
        };
        hub.publish(draft, herald::hub::Source::Console)
            .unwrap()
            .id()
            .unwrap()
    };
    let first = publish(r#"{"status":"new","n":1}"#);
    console.step_until("it is listed", |h| h.query_by_label("22 B").is_some());
    console.harness.get_by_label("22 B").click();
    console.step_until("its details show", |h| h.query_by_label("Star").is_some());
    console.harness.get_by_label("Star").click();
    console.step_until("it is starred", |h| {
        h.query_by_label(&format!("*{first}")).is_some()
    });
    console.harness.get_by_label("Compare…").click();
    console.harness.step();
    let second = publish(r#"{"status":"paid","n":1}"#);
    publish(r#"{"other":true}"#);
    publish(r#"{"other":false}"#);
    // Two messages fit in the log; the starred one stays beside them.
    console.step_until("the starred one is still listed", |h| {
        h.query_by_label(&format!("*{first}")).is_some()
    });
    assert!(hub.message(second).is_none(), "the unstarred one left");
    let third = hub.messages(None, 1)[0].id;
    console.harness.get_by_label(&third.to_string()).click();
    console.step_until("the other can be compared with the first", |h| {
        h.query_by_label(&format!("Compare with message {first}"))
            .is_some()
    });
    console
        .harness
        .get_by_label(&format!("Compare with message {first}"))
        .click();
    console.step_until("the payloads show side by side", |h| {
        h.query_by_label(&format!("Message {first} and message {third}"))
            .is_some()
            && h.query_by_label(r#"  "status": "new","#).is_some()
            && h.query_by_label(r#"  "other": false"#).is_some()
    });
}

#[test]
fn a_matrix_cell_opens_its_delivery_timeline() {
    let mut console = console(|config| {
        config.retry_schedule.0 = vec![Duration::from_secs(30)];
    });
    let hub = console.harness.state().hub().clone();
    let ok = console.runtime.block_on(Receiver::start());
    let failing = console.runtime.block_on(Receiver::answering(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
    ));
    hub.subscribe(&ok.address()).unwrap();
    hub.subscribe(&failing.address()).unwrap();
    let id = hub
        .publish(
            herald::hub::Draft::new("to both"),
            herald::hub::Source::Console,
        )
        .unwrap()
        .id()
        .unwrap();
    console.harness.get_by_label("Matrix").click();
    let failing_cell = format!(
        "message {id} to {}: retrying, 1 attempts",
        failing.address()
    );
    let ok_cell = format!("message {id} to {}: delivered in", ok.address());
    console.step_until("both cells show what became of their delivery", |h| {
        h.query_by_label(&failing_cell).is_some() && h.query_by_label_contains(&ok_cell).is_some()
    });
    console.harness.step();
    console.harness.get_by_label(&failing_cell).click();
    console.step_until("the delivery's timeline is open in the details", |h| {
        h.query_by_label_contains("#1 at").is_some()
            && h.query_by_label_contains("retrying 2 of 2 in").is_some()
    });
}

#[test]
fn a_message_to_many_subscribers_lists_its_deliveries_a_page_at_a_time() {
    let mut console = console(|config| config.max_subscribers = 200);
    let hub = console.harness.state().hub().clone();
    // Paused, so nothing is sent: the deliveries stay pending where the list shows them.
    let addresses: Vec<String> = (0..150)
        .map(|i| format!("svc-{i}.page.test:{}", 2000 + i))
        .collect();
    for address in &addresses {
        hub.subscribe(address).unwrap();
        hub.set_paused(address, true).unwrap();
    }
    hub.publish(
        herald::hub::Draft::new("to 150"),
        herald::hub::Source::Console,
    )
    .unwrap();
    console.step_until("it is listed", |h| h.query_by_label("6 B").is_some());
    console.harness.get_by_label("6 B").click();
    let line = |i: usize| format!("{}  pending", addresses[i]);
    console.step_until("the first page of deliveries shows", |h| {
        h.query_by_label("Deliveries (150)").is_some() && h.query_by_label("1–100").is_some()
    });
    assert!(console.shows(&line(0)));
    assert!(!console.shows(&line(120)), "the second page is not drawn");
    console.harness.get_by_label("›").click();
    console.step_until("the second page shows", |h| {
        h.query_by_label("101–150").is_some()
    });
    assert!(console.shows(&line(120)));
    assert!(!console.shows(&line(0)), "the first page is not drawn");
}

#[test]
fn in_cluster_mode_the_console_shows_the_cluster_and_publishes_through_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nats = runtime.block_on(crate::cluster::Nats::start());
    let mut console = console(|config| {
        config.cluster = Some(nats.url());
        config.instance_name = Some("desk".to_owned());
    });
    let hub = console.harness.state().hub().clone();
    let mut receiver = console.runtime.block_on(Receiver::start());
    hub.subscribe(&receiver.address()).unwrap();
    console.step_until("the top bar shows the cluster", |h| {
        h.query_by_label("1 instance").is_some()
    });
    // The top bar just grew: clicks land where widgets were drawn, so let it settle.
    console.harness.step();
    console.harness.step();
    console.type_message(r#"{"via": "the stream"}"#);
    console.harness.get_by_label("Publish").click();
    console.harness.step();
    console.harness.step();
    let received = console.runtime.block_on(receiver.recv());
    assert_eq!(received.body, r#"{"via": "the stream"}"#);
    console.step_until("compose says where it went", |h| {
        h.query_by_label_contains("Handed to the cluster, for 1 subscriber")
            .is_some()
    });
    console.harness.get_by_label("Cluster").click();
    console.step_until("the window lists this instance and its delivery", |h| {
        h.query_all_by_label("desk").count() == 3 // this instance, its row, its delivery
            && h.query_by_label("connected").is_some()
            && h.query_by_label("#1").is_some()
    });
}
