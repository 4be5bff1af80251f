//! The window of requests in flight per registry (`sync.concurrency` at the start,
//! `sync.max_concurrency` the cap): a front that answers after a delay counts the most requests
//! it handled at once, and a 429 halves the window while the run still completes.

use hyper::StatusCode;

use crate::support::front::{Fault, FrontOptions, GhcrFront};
use crate::support::mirrord::{Env, check_mirror, push_generated, text};
use crate::support::registry::TestRegistry;

#[test]
fn requests_in_flight_never_exceed_max_concurrency() {
    let reg = TestRegistry::shared();
    let repo = "adaptive/cap";
    let cache = push_generated(&reg.url(repo), 12, 2_000, 1701);
    let front = GhcrFront::start(
        reg.addr(),
        FrontOptions {
            answer_delay: Some(std::time::Duration::from_millis(50)),
            ..FrontOptions::default()
        },
    );
    let env = Env::new(&front.url(repo));
    std::fs::write(
        env.config_path(),
        std::fs::read_to_string(env.config_path())
            .unwrap()
            .replace("concurrency = 4", "concurrency = 2\nmax_concurrency = 3"),
    )
    .unwrap();
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&env.root(), &cache.specs.iter().collect::<Vec<_>>());
    let peak = front.peak_in_flight();
    // 12 manifests, 12 configs and 12 tarballs were there to overlap; the cap held them.
    assert!((2..=3).contains(&peak), "peak {peak}\n{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("requests in flight") && l.contains("peak_in_flight="))
        .unwrap_or_else(|| panic!("no summary of requests in flight\n{stderr}"));
    assert!(
        ["peak_in_flight=2", "peak_in_flight=3"]
            .iter()
            .any(|p| line.contains(p)),
        "{line}"
    );
}

#[test]
fn a_429_halves_the_window_and_the_run_still_completes() {
    let reg = TestRegistry::shared();
    let repo = "adaptive/429";
    let cache = push_generated(&reg.url(repo), 3, 2_000, 1702);
    let front = GhcrFront::start(reg.addr(), FrontOptions::default());
    let env = Env::new(&front.url(repo));
    // A fixed window of 4 (no growth to muddle what the 429 does), logged at debug.
    env.write_config("max_concurrency = 4\n[log]\nlevel = \"debug\"\n");
    let tag = cache.specs.last().unwrap().tag.clone();
    front.inject_fault(
        Fault::status(
            &format!("/manifests/{tag}"),
            StatusCode::TOO_MANY_REQUESTS,
            1,
        )
        .with_header("retry-after", "1"),
    );
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&env.root(), &cache.specs.iter().collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let halved = stderr
        .lines()
        .find(|l| l.contains("requests in flight adjusted"))
        .unwrap_or_else(|| panic!("the window was never adjusted\n{stderr}"));
    assert!(
        halved.contains("from=4") && halved.contains("to=2"),
        "{halved}"
    );
    assert!(stderr.contains("rate_limited=1"), "{stderr}");
}
