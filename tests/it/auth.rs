//! Credentials end to end: a real `docker-registry` with htpasswd Basic auth, and the ghcr-like
//! front's token server with Basic credentials. Each source in the documented order is used:
//! `source.username` + `source.password_file`, Docker's `config.json` (`auths`), and a
//! `credsStore` helper. Wrong credentials fail the run naming the registry and the source;
//! the secret never shows.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Output;

use spack_mirrord::demo;
use spack_mirrord::model::{Credentials, Network, Secret};

use crate::support::front::{FrontOptions, GhcrFront};
use crate::support::mirrord::{
    Env, check_mirror, push_generated, push_generated_with, run_binary, text,
};
use crate::support::registry::TestRegistry;

/// `htpasswd -Bbn testuser testpass` (registry-notes.md §3.2).
const HTPASSWD: &str = "testuser:$2y$05$Yv/v9K41DyskAc64uAGreuE5Y/2sjc1zMxmhitCqPPe4QK5oLGRie\n";
const AUTH_YAML: &str =
    "auth:\n  htpasswd:\n    realm: basic-realm\n    path: \"{dir}/htpasswd\"\n";
/// base64 of `testuser:testpass`, as `docker login` writes it.
const AUTH_RIGHT: &str = "dGVzdHVzZXI6dGVzdHBhc3M=";
/// base64 of `testuser:wrong`.
const AUTH_WRONG: &str = "dGVzdHVzZXI6d3Jvbmc=";

fn basic(user: &str, pass: &str) -> Credentials {
    Credentials::Basic {
        username: user.to_owned(),
        password: Secret::new(pass.to_owned()),
        origin: "test".to_owned(),
    }
}

/// A registry with htpasswd auth holding a generated cache in `repo`.
fn basic_auth_registry(repo: &str, seed: u64) -> (TestRegistry, demo::Cache) {
    let reg = TestRegistry::start_with(AUTH_YAML, &[("htpasswd", HTPASSWD.as_bytes())]);
    let cache = push_generated_with(
        &reg.url(repo),
        3,
        seed,
        &basic("testuser", "testpass"),
        &Network::default(),
    );
    (reg, cache)
}

/// A config with `source.username` and a password file holding `password`.
fn with_password_file(env: &Env, password: &str) {
    std::fs::write(env.dir.path().join("pw"), format!("{password}\n")).unwrap();
    env.write_config("");
    let cfg = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "[mirror]",
        "username = \"testuser\"\npassword_file = \"pw\"\n[mirror]",
    );
    std::fs::write(env.config_path(), cfg).unwrap();
}

/// Writes `$DOCKER_CONFIG/config.json` under the env's directory; returns `DOCKER_CONFIG`.
fn docker_config(env: &Env, json: &str) -> String {
    let dir = env.dir.path().join("docker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), json).unwrap();
    dir.to_str().unwrap().to_owned()
}

fn run_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let config = env.config_path();
    let all = [&["--config", config.to_str().unwrap()], args].concat();
    run_binary(&all, vars)
}

fn last_run_error(env: &Env) -> String {
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "failed", "{run}");
    run["error"].as_str().unwrap().to_owned()
}

fn everything(out: &Output, env: &Env) -> String {
    format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        env.status_json()
    )
}

#[test]
fn a_basic_auth_registry_is_mirrored_with_username_and_password_file() {
    let (reg, cache) = basic_auth_registry("auth/basic-ok", 1101);
    let env = Env::new(&reg.url("auth/basic-ok"));
    with_password_file(&env, "testpass");
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&env.root(), &cache.specs.iter().collect::<Vec<_>>());
    assert!(
        !everything(&out, &env).contains("testpass"),
        "the secret leaked"
    );
}

#[test]
fn a_wrong_password_fails_the_run_naming_the_registry_and_the_password_file() {
    let (reg, _cache) = basic_auth_registry("auth/basic-wrong", 1102);
    let env = Env::new(&reg.url("auth/basic-wrong"));
    with_password_file(&env, "not-the-password");
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = last_run_error(&env);
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(err.contains(&reg.host_port()), "{err}");
    assert!(err.contains("source.password_file"), "{err}");
    assert!(!everything(&out, &env).contains("not-the-password"));
}

#[test]
fn anonymous_access_to_a_basic_auth_registry_says_how_to_give_credentials() {
    let (reg, _cache) = basic_auth_registry("auth/basic-anon", 1103);
    let env = Env::new(&reg.url("auth/basic-anon"));
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = last_run_error(&env);
    assert!(err.contains("refused the credentials (anonymous)"), "{err}");
    assert!(err.contains("source.username"), "{err}");
}

#[test]
fn docker_config_auths_are_used_and_config_check_names_the_file_not_the_secret() {
    let (reg, cache) = basic_auth_registry("auth/docker-auths", 1104);
    let env = Env::new(&reg.url("auth/docker-auths"));
    let host = reg.host_port();
    let dc = docker_config(
        &env,
        &format!(r#"{{"auths":{{"http://{host}/v2/":{{"auth":"{AUTH_RIGHT}"}}}}}}"#),
    );
    let vars = [("DOCKER_CONFIG", dc.as_str())];
    let check = run_with(&env, &["config", "check"], &vars);
    assert!(check.status.success(), "{}", text(&check));
    let shown = String::from_utf8_lossy(&check.stdout);
    assert!(
        shown.contains(&format!(
            "user testuser, password from docker config {dc}/config.json (auths) (redacted)"
        )),
        "{shown}"
    );
    assert!(!shown.contains("testpass") && !shown.contains(AUTH_RIGHT));
    let out = run_with(&env, &["sync", "--now"], &vars);
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&env.root(), &cache.specs.iter().collect::<Vec<_>>());
    assert!(!everything(&out, &env).contains("testpass"));
}

#[test]
fn the_config_file_credentials_win_over_docker_config() {
    let (reg, _cache) = basic_auth_registry("auth/docker-order", 1105);
    let env = Env::new(&reg.url("auth/docker-order"));
    with_password_file(&env, "testpass");
    let host = reg.host_port();
    // A broken docker config is never read when the config file names credentials.
    let dc = docker_config(
        &env,
        &format!(r#"{{"auths":{{"{host}":{{"auth":"@@"}}}}}}"#),
    );
    let check = run_with(
        &env,
        &["config", "check"],
        &[("DOCKER_CONFIG", dc.as_str())],
    );
    assert!(check.status.success(), "{}", text(&check));
    assert!(String::from_utf8_lossy(&check.stdout).contains("password from source.password_file"));
}

#[test]
fn a_creds_store_helper_supplies_the_credentials() {
    let (reg, cache) = basic_auth_registry("auth/helper", 1106);
    let env = Env::new(&reg.url("auth/helper"));
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-test");
    // The helper protocol: `get`, the registry on stdin, JSON on stdout.
    std::fs::write(
        &helper,
        "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\nprintf '%s' \"$server\" > \"$(dirname \"$0\")/asked\"\n\
         printf '{\"ServerURL\":\"%s\",\"Username\":\"testuser\",\"Secret\":\"testpass\"}' \"$server\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dc = docker_config(&env, r#"{"auths":{},"credsStore":"test"}"#);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let vars = [("DOCKER_CONFIG", dc.as_str()), ("PATH", path.as_str())];
    let check = run_with(&env, &["config", "check"], &vars);
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("password from docker-credential-test"),
        "{}",
        text(&check)
    );
    let out = run_with(&env, &["sync", "--now"], &vars);
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&env.root(), &cache.specs.iter().collect::<Vec<_>>());
    assert_eq!(
        std::fs::read_to_string(bin.join("asked")).unwrap(),
        reg.host_port()
    );
}

#[test]
fn a_missing_credential_helper_is_a_config_error_naming_it() {
    let env = Env::new("oci+http://127.0.0.1:9/auth/nohelper");
    let dc = docker_config(&env, r#"{"credsStore":"surely-not-installed"}"#);
    let out = run_with(
        &env,
        &["config", "check"],
        &[("DOCKER_CONFIG", dc.as_str())],
    );
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("docker-credential-surely-not-installed"),
        "{stderr}"
    );
    assert!(stderr.contains(&dc), "{stderr}");
    // Reading the ledger never involves the registry's credentials, so no helper runs.
    for args in [&["status"][..], &["status", "--json"], &["verify"]] {
        let out = run_with(&env, args, &[("DOCKER_CONFIG", dc.as_str())]);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
}

/// The front's token server (bearer flow) in front of the shared registry, taking Basic
/// credentials `testuser:testpass` only.
fn token_front(repo: &str, seed: u64) -> (GhcrFront, Env) {
    let reg = TestRegistry::shared();
    push_generated(&reg.url(repo), 2, 20_000, seed);
    let front = GhcrFront::start(
        reg.addr(),
        FrontOptions {
            credentials: Some(("testuser".to_owned(), "testpass".to_owned())),
            allow_anonymous: false,
            ..FrontOptions::default()
        },
    );
    let env = Env::new(&front.url(repo));
    (front, env)
}

#[test]
fn docker_config_credentials_pass_a_token_server() {
    let (front, env) = token_front("auth/front-docker", 1107);
    let host = front.addr().to_string();
    let dc = docker_config(
        &env,
        &format!(r#"{{"auths":{{"{host}":{{"auth":"{AUTH_RIGHT}"}}}}}}"#),
    );
    let out = run_with(&env, &["sync", "--now"], &[("DOCKER_CONFIG", dc.as_str())]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.status_json()["last_run"]["specs_fetched"], 2);
    assert!(
        front
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/token") && r.has_authorization()),
        "the token request carried no credentials"
    );
}

#[test]
fn wrong_docker_config_credentials_fail_naming_the_registry_and_the_docker_config() {
    let (front, env) = token_front("auth/front-docker-wrong", 1108);
    let host = front.addr().to_string();
    let dc = docker_config(
        &env,
        &format!(r#"{{"auths":{{"{host}":{{"auth":"{AUTH_WRONG}"}}}}}}"#),
    );
    let out = run_with(&env, &["sync", "--now"], &[("DOCKER_CONFIG", dc.as_str())]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = last_run_error(&env);
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(err.contains(&host), "{err}");
    assert!(
        err.contains(&format!("docker config {dc}/config.json")),
        "{err}"
    );
    assert!(err.contains("docker login"), "{err}");
    assert!(!everything(&out, &env).contains(AUTH_WRONG));
}
