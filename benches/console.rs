//! Frame time of the console with a large hub: 10,000 subscribers and 100,040 logged
//! messages (the newest 40 with a delivery pending to each subscriber), measured through the real app driven by egui_kittest (UI code only: layout,
//! tables, text; no GPU).
//!
//!     cargo bench --bench console

use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use herald::Config;
use herald::gui::{Backend, HeraldApp, Settings};
use herald::hub::{Draft, Source};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        log_capacity: 100_000,
        max_subscribers: 20_000,
        ..Config::default()
    };
    let backend = Arc::new(Backend::start(&config, runtime.handle().clone()).unwrap());
    let hub = backend.hub().clone();
    let started = Instant::now();
    for i in 0..100_000u32 {
        let body = format!(
            r#"{{"type":"order.created","id":"ord_{i}","total_cents":{}}}"#,
            i * 7
        );
        runtime
            .block_on(hub.publish_when_ready(
                Draft {
                    content_type: Some("application/json".to_owned()),
                    ..Draft::new(body)
                },
                Source::Console,
            ))
            .expect("the hub takes messages");
    }
    // Registered after the messages, so no delivery is attempted: this measures drawing.
    for i in 0..10_000u32 {
        hub.subscribe(&format!("svc-{i}.bench.local:{}", 1024 + i))
            .unwrap();
    }
    // Then 40 messages to all 10,000, held pending (the subscribers are paused, so nothing
    // is sent): 400,000 deliveries for the fan-out matrix to show.
    for i in 0..10_000u32 {
        hub.set_paused(&format!("svc-{i}.bench.local:{}", 1024 + i), true)
            .unwrap();
    }
    for i in 0..40u32 {
        runtime
            .block_on(hub.publish_when_ready(Draft::new(format!("to all {i}")), Source::Console))
            .expect("the hub takes messages");
    }
    println!(
        "hub filled in {:?}: {} subscribers, {} logged messages",
        started.elapsed(),
        hub.subscriber_count(),
        hub.logged_messages()
    );
    let ctx = egui::Context::default();
    let app = HeraldApp::new(backend, Settings::from_config(&config), &ctx);
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_ui_state(|ui, app: &mut HeraldApp| app.ui_root(ui), app);

    report("idle, nothing selected", &mut harness, |_| {});
    // A message without deliveries (the 41st newest); the other "100000" is the log's
    // message count.
    harness
        .get_all_by_label("100000")
        .last()
        .expect("the message is on screen")
        .click();
    harness.step();
    report("a message selected", &mut harness, |_| {});
    // A keep-alive per frame: the hub's version moves, so every refresh path runs.
    report("hub changing every frame", &mut harness, |_| {
        hub.subscribe("svc-0.bench.local:1024").unwrap();
    });
    // The fan-out matrix: 1,000 messages by 10,000 subscribers, 40 rows of them pending.
    harness.get_by_label("Matrix").click();
    harness.step();
    report("fan-out matrix open", &mut harness, |_| {});
    // The newest message, with a delivery to each of the 10,000: its details list them all.
    harness
        .get_all_by_label("100040")
        .last()
        .expect("the newest message is on screen")
        .click();
    harness.step();
    report("10,000 deliveries selected", &mut harness, |_| {});
}

/// Steps the app 300 times; prints the UI code's own time and the whole step's.
fn report(label: &str, harness: &mut Harness<'_, HeraldApp>, mut each: impl FnMut(usize)) {
    for _ in 0..20 {
        harness.step();
    }
    let mut ui_times = Vec::new();
    let mut step_times = Vec::new();
    for i in 0..300 {
        each(i);
        let started = Instant::now();
        harness.step();
        step_times.push(started.elapsed());
        ui_times.push(harness.state().frame_time());
        // Let the app's refresh intervals (100 ms, 1 s) come round during the run.
        std::thread::sleep(Duration::from_millis(5));
    }
    ui_times.sort_unstable();
    step_times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<28} UI code p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms | whole step p50 {:>6.2} ms  p99 {:>6.2} ms",
        ms(ui_times[150]),
        ms(ui_times[296]),
        ms(ui_times[299]),
        ms(step_times[150]),
        ms(step_times[296]),
    );
}
