//! The run's `sync_run` span covers the run's own events only: other tasks on the same
//! worker thread log outside it while the run awaits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use spack_mirrord::{config, lock, model::Trigger, sync};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::support::mirrord::Env;

/// An event's message and the names of the spans it was logged in.
type Logged = (String, Vec<String>);

/// Records each event as [`Logged`].
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Logged>>>);

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let spans = ctx
            .event_scope(event)
            .map(|scope| scope.map(|s| s.name().to_owned()).collect())
            .unwrap_or_default();
        self.0.lock().unwrap().push((message.0, spans));
    }
}

#[test]
fn events_of_other_tasks_are_not_logged_inside_the_run_span() {
    // A registry that accepts connections and never answers: the run awaits its first request.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(16) {
            held.push(s);
        }
    });
    let env = Env::new(&format!("oci+http://127.0.0.1:{port}/cache"));
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let quick = "[source]\nmax_attempts = 1\nrequest_timeout = \"1s\"\n";
    let text = text
        .replace("[source]\n", quick)
        .replace("[sync]\n", "[sync]\nrun_timeout = \"1s\"\n");
    std::fs::write(env.config_path(), text).unwrap();
    let config = config::load(&env.config_path()).unwrap();
    std::fs::create_dir_all(env.state()).unwrap();

    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let marker = tokio::spawn(async {
                for _ in 0..20 {
                    tracing::info!("marker from another task");
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            });
            let run_lock = lock::try_acquire(&config.state_dir).unwrap();
            let cancel = CancellationToken::new();
            let opts = sync::Options {
                trigger: Trigger::Manual,
                full: false,
                progress: None,
            };
            let report = sync::run(&config, &run_lock, opts, &cancel).await.unwrap();
            marker.await.unwrap();
            assert_ne!(report.outcome, spack_mirrord::model::Outcome::Success);
        });
    });

    let events = recorder.0.lock().unwrap().clone();
    let markers: Vec<_> = events
        .iter()
        .filter(|(m, _)| m == "marker from another task")
        .collect();
    assert_eq!(markers.len(), 20, "{events:?}");
    for (_, spans) in &markers {
        assert!(!spans.iter().any(|s| s == "sync_run"), "{events:?}");
    }
    let started = events.iter().find(|(m, _)| m == "sync started").unwrap();
    assert!(started.1.iter().any(|s| s == "sync_run"), "{events:?}");
}
