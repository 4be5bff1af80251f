//! HTTPS to a registry whose certificate is signed by a private CA generated here (rcgen):
//! trusted with `source.ca_file`, refused without it, naming the URL.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use spack_mirrord::model::CaPem;
use spack_mirrord::model::{Credentials, Network};

use crate::support::mirrord::{Env, check_mirror, push_generated_with, text};
use crate::support::registry::TestRegistry;

/// A CA and a server certificate for `127.0.0.1` and `localhost`, PEM: (ca, cert, key).
fn generate_ca_and_server_cert() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "spack-mirrord test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "test registry");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

const TLS_YAML: &str =
    "  tls:\n    certificate: \"{dir}/server.crt\"\n    key: \"{dir}/server.key\"\n";

/// A registry served over TLS holding a generated cache in `repo`; the CA's PEM.
fn tls_registry(repo: &str, seed: u64) -> (TestRegistry, String, spack_mirrord::demo::Cache) {
    let (ca, cert, key) = generate_ca_and_server_cert();
    let reg = TestRegistry::start_with(
        TLS_YAML,
        &[
            ("server.crt", cert.as_bytes()),
            ("server.key", key.as_bytes()),
        ],
    );
    let network = Network {
        ca_pem: Some(
            CaPem::parse(std::path::Path::new("ca.pem"), ca.clone().into_bytes()).unwrap(),
        ),
        ..Network::default()
    };
    let url = format!("oci://{}/{repo}", reg.host_port());
    let cache = push_generated_with(&url, 3, seed, &Credentials::Anonymous, &network);
    (reg, ca, cache)
}

#[test]
fn a_registry_with_a_private_ca_is_mirrored_over_https_with_ca_file() {
    let (reg, ca, cache) = tls_registry("tls/ok", 1121);
    let env = Env::new(&format!("oci://{}/tls/ok", reg.host_port()));
    std::fs::write(env.dir.path().join("ca.pem"), ca).unwrap();
    let cfg = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("[mirror]", "ca_file = \"ca.pem\"\n[mirror]");
    std::fs::write(env.config_path(), cfg).unwrap();
    let check = env.run(&["config", "check"]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(String::from_utf8_lossy(&check.stdout).contains("ca_file = "));
    let out = env.sync();
    assert!(out.status.success(), "{}", text(&out));
    check_mirror(&env.root(), &cache.specs.iter().collect::<Vec<_>>());
}

#[test]
fn without_ca_file_an_untrusted_certificate_fails_the_run_naming_the_url() {
    let (reg, _ca, _cache) = tls_registry("tls/untrusted", 1122);
    let env = Env::new(&format!("oci://{}/tls/untrusted", reg.host_port()));
    let out = env.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = env.status_json()["last_run"].clone();
    assert_eq!(run["outcome"], "failed", "{run}");
    let err = run["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("https://{}", reg.host_port())),
        "{err}"
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(err.contains("source.ca_file"), "{err}");
}

#[test]
fn a_ca_file_that_is_not_pem_is_a_config_error_naming_the_key() {
    let env = Env::new("oci://127.0.0.1:9/tls/badca");
    std::fs::write(env.dir.path().join("ca.pem"), "not a certificate").unwrap();
    let cfg = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("[mirror]", "ca_file = \"ca.pem\"\n[mirror]");
    std::fs::write(env.config_path(), cfg).unwrap();
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("source.ca_file"), "{stderr}");
    assert!(stderr.contains("ca.pem"), "{stderr}");
}
