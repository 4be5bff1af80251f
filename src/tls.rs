//! Transport security choices: the private CA of `source.ca_file` (read and checked by
//! `config::load`, added to both HTTP clients by `registry`), and the warning for plain HTTP
//! to a registry that is not on this machine.

use std::path::Path;

use crate::model::{CaPem, RepoRef, Scheme};

impl CaPem {
    /// Checks that `pem` holds at least one PEM certificate; the error says what is wrong.
    pub fn parse(path: &Path, pem: Vec<u8>) -> Result<Self, String> {
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) if !certs.is_empty() => Ok(Self {
                path: path.to_owned(),
                pem,
            }),
            Ok(_) => Err(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            )),
            Err(e) => Err(format!(
                "{} is not a PEM certificate bundle: {e}",
                path.display()
            )),
        }
    }

    /// The certificates, for reqwest.
    pub fn certificates(&self) -> Result<Vec<reqwest::Certificate>, reqwest::Error> {
        reqwest::Certificate::from_pem_bundle(&self.pem)
    }
}

/// The warning to log when `repo` is reached over plain HTTP on a host that is not loopback.
pub fn plain_http_warning(repo: &RepoRef) -> Option<String> {
    (repo.scheme == Scheme::Http && !repo.is_loopback()).then(|| {
        format!(
            "source.url {} uses oci+http:// to {}, which is not this machine: traffic is \
             unencrypted and any credentials travel in clear; use oci:// (HTTPS, with \
             source.ca_file for a private CA) unless the network is trusted",
            repo, repo.registry
        )
    })
}

/// Whether `err` (or a cause of it) is a refused server certificate.
pub fn is_certificate_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("unknownissuer") {
            return true;
        }
        cur = e.source();
    }
    false
}

/// What to add to a connection error whose cause is a refused certificate.
pub fn certificate_hint(err: &(dyn std::error::Error + 'static)) -> &'static str {
    if is_certificate_error(err) {
        " (its TLS certificate is not trusted: if a private CA signed it, set source.ca_file to \
         that CA's PEM file)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(url: &str) -> RepoRef {
        url.parse().unwrap()
    }

    #[test]
    fn plain_http_warns_only_for_hosts_off_this_machine() {
        let w = plain_http_warning(&repo("oci+http://10.255.255.1:5000/c")).unwrap();
        assert!(w.contains("10.255.255.1:5000"), "{w}");
        assert!(w.contains("unencrypted"), "{w}");
        assert!(plain_http_warning(&repo("oci+http://127.0.0.1:5000/c")).is_none());
        assert!(plain_http_warning(&repo("oci+http://localhost:5000/c")).is_none());
        assert!(plain_http_warning(&repo("oci://registry.example/c")).is_none());
    }

    #[test]
    fn a_file_without_certificates_is_refused_naming_it() {
        let p = Path::new("/etc/ca.pem");
        let err = CaPem::parse(p, b"hello".to_vec()).unwrap_err();
        assert!(err.contains("/etc/ca.pem"), "{err}");
        assert!(
            format!(
                "{:?}",
                CaPem {
                    path: p.to_owned(),
                    pem: b"x".to_vec()
                }
            )
            .contains("/etc/ca.pem")
        );
    }
}
