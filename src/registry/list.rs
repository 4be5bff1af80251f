//! `Link`-paged listings: the tags of the repository (`/v2/<repo>/tags/list`) and the
//! registry's catalog (`/v2/_catalog`), following `rel="next"` while each page adds names and
//! the link stays on the registry and does not loop. Only listing: which tags or repositories
//! matter is decided by the callers (`plan`, `oras`).

use std::collections::BTreeSet;

use reqwest::header::LINK;

use super::{Error, RegistryClient};

/// Most pages a tag listing may take before it is treated as a loop.
const MAX_TAG_PAGES: usize = 10_000;

impl RegistryClient {
    /// Every tag of the repository, following `Link: <…>; rel="next"` pages. Pages that bring
    /// nothing new, or a `Link` back to a page already read, end the listing.
    pub async fn list_tags(&self) -> Result<Vec<String>, Error> {
        self.list_paged(self.v2_url("tags/list?n=1000"), "tags/list", |page| {
            serde_json::from_slice::<TagList>(page).map(|p| p.tags.unwrap_or_default())
        })
        .await
    }

    /// The repositories of the registry below `prefix` (`/v2/_catalog`, `Link`-paged like
    /// tags), relative to it. Registries without a catalog (ghcr.io) answer with an error that
    /// says to list the repositories in the config instead.
    pub async fn catalog(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let url = format!("{}/v2/_catalog?n=1000", self.repo.base_url());
        let names = self
            .list_paged(url.clone(), "_catalog", |page| {
                serde_json::from_slice::<Catalog>(page).map(|c| c.repositories.unwrap_or_default())
            })
            .await
            .map_err(|e| match e {
                Error::Status { status, detail, .. }
                    if matches!(status.as_u16(), 401 | 403 | 404 | 405)
                        || detail.as_deref().is_some_and(|d| d.contains("UNSUPPORTED")) =>
                {
                    Error::NoCatalog {
                        registry: self.repo.registry.clone(),
                        answer: format!(
                            "{status}{}",
                            detail.map(|d| format!(": {d}")).unwrap_or_default()
                        ),
                    }
                }
                e => e,
            })?;
        Ok(crate::oras::below_prefix(
            names.iter().map(String::as_str),
            prefix,
        ))
    }

    /// Every name of a `Link`-paged listing starting at `url`, sorted and unique. Pages that
    /// bring nothing new, or a `Link` back to a page already read, end the listing.
    async fn list_paged(
        &self,
        mut url: String,
        what: &str,
        parse: impl Fn(&[u8]) -> Result<Vec<String>, serde_json::Error>,
    ) -> Result<Vec<String>, Error> {
        let mut seen_urls = BTreeSet::new();
        let mut tags = BTreeSet::new();
        for _ in 0..MAX_TAG_PAGES {
            seen_urls.insert(url.clone());
            let page_url = &url;
            let (page, next) = self
                .with_retry(what, |slot| async move {
                    let url = page_url;
                    let resp = self.send(&slot, reqwest::Method::GET, url, &[]).await?;
                    let next = resp
                        .headers()
                        .get(LINK)
                        .and_then(|v| v.to_str().ok())
                        .and_then(next_link);
                    let body = Self::body(url, resp, 64 << 20).await?;
                    Ok((body, next))
                })
                .await?;
            let page_tags = parse(&page).map_err(|e| Error::Malformed {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            let before = tags.len();
            tags.extend(page_tags);
            if tags.len() == before {
                break;
            }
            let Some(next) = next else { break };
            let next = Self::resolve_link(&url, &next)?;
            if seen_urls.contains(&next) {
                tracing::warn!(url = %next, what, "listing links back to a page already read; stopping");
                break;
            }
            url = next;
        }
        Ok(tags.into_iter().collect())
    }

    /// Resolves a `Link` target against the registry; it must stay on the registry.
    fn resolve_link(current: &str, link: &str) -> Result<String, Error> {
        let bad = |reason: &str| Error::Malformed {
            url: current.to_owned(),
            reason: format!("Link target {link:?} {reason}"),
        };
        let base = url::Url::parse(current).map_err(|_| bad("cannot be resolved"))?;
        let next = base.join(link).map_err(|_| bad("is not a URL"))?;
        if next.scheme() != base.scheme()
            || next.host_str() != base.host_str()
            || next.port_or_known_default() != base.port_or_known_default()
        {
            return Err(bad("leaves the registry"));
        }
        Ok(next.to_string())
    }
}

#[derive(serde::Deserialize)]
struct TagList {
    tags: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct Catalog {
    repositories: Option<Vec<String>>,
}

/// The target of `rel="next"` in a `Link` header value.
fn next_link(value: &str) -> Option<String> {
    value.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_finds_rel_next() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=x&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=x&n=2")
        );
        assert_eq!(
            next_link(r#"<https://r/p1>; rel="prev", <https://r/p3>; rel="next""#).as_deref(),
            Some("https://r/p3")
        );
        assert_eq!(next_link(r#"<https://r/p1>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn links_must_stay_on_the_registry() {
        let cur = "http://127.0.0.1:5000/v2/a/tags/list?n=2";
        assert_eq!(
            RegistryClient::resolve_link(cur, "/v2/a/tags/list?last=b&n=2").unwrap(),
            "http://127.0.0.1:5000/v2/a/tags/list?last=b&n=2"
        );
        assert!(RegistryClient::resolve_link(cur, "http://evil.example/v2/a").is_err());
        assert!(RegistryClient::resolve_link(cur, "https://127.0.0.1:5000/v2/a").is_err());
    }
}
