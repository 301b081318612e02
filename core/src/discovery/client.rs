//! Talking to the discovery service over HTTP: one fetch, or a long-poll
//! that answers when the list changes.

use std::time::Duration;

use super::list::{ServerList, MAX_ANSWER_BYTES};
use super::DiscoveryError;

/// How long connecting to the service may take before it counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a plain fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of one discovery service.
#[derive(Debug, Clone)]
pub struct DiscoveryClient {
    base: String,
    http: reqwest::Client,
}

impl DiscoveryClient {
    /// A client for the service at `base_url` (`http://127.0.0.1:8080`).
    pub fn new(base_url: &str) -> Result<DiscoveryClient, DiscoveryError> {
        let base = base_url.trim_end_matches('/');
        let host = base
            .strip_prefix("http://")
            .filter(|rest| !rest.is_empty() && !rest.contains(['?', '#', ' ']))
            .ok_or_else(|| {
                DiscoveryError::Invalid(format!(
                    "discovery URL {base_url:?}: expected http://HOST[:PORT][/PATH]"
                ))
            })?;
        tracing::debug!(%host, "discovery service");
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // The service is named explicitly; a proxy would only add a hop
            // that can fail.
            .no_proxy()
            .build()
            .map_err(|e| DiscoveryError::Invalid(e.to_string()))?;
        Ok(DiscoveryClient {
            base: base.to_owned(),
            http,
        })
    }

    /// The list now. A front end that has no JSON list (404) is asked for
    /// its XML one, which the original front end served.
    pub async fn fetch(&self) -> Result<ServerList, DiscoveryError> {
        match self
            .get(format!("{}/v1/servers", self.base), FETCH_TIMEOUT)
            .await
        {
            Err(DiscoveryError::Http { status: 404, .. }) => self.fetch_xml().await,
            other => other,
        }
    }

    /// The list in the XML form (`GET /v1/servers.xml`).
    pub async fn fetch_xml(&self) -> Result<ServerList, DiscoveryError> {
        let body = self
            .body(format!("{}/v1/servers.xml", self.base), FETCH_TIMEOUT)
            .await?;
        ServerList::from_xml(&body)
    }

    /// The list once its version passes `since`, or as it is after `wait`.
    pub async fn watch(&self, since: u64, wait: Duration) -> Result<ServerList, DiscoveryError> {
        let url = format!(
            "{}/v1/servers?since={since}&wait={}",
            self.base,
            wait.as_secs()
        );
        self.get(url, wait + FETCH_TIMEOUT).await
    }

    async fn get(&self, url: String, timeout: Duration) -> Result<ServerList, DiscoveryError> {
        ServerList::from_json(&self.body(url, timeout).await?)
    }

    /// A successful answer's body, at most [`MAX_ANSWER_BYTES`].
    async fn body(&self, url: String, timeout: Duration) -> Result<Vec<u8>, DiscoveryError> {
        let unreachable = |e: reqwest::Error| DiscoveryError::Unreachable(e.to_string());
        let mut response = self
            .http
            .get(&url)
            .timeout(timeout)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(DiscoveryError::Garbage(format!(
                    "answer over the {MAX_ANSWER_BYTES}-byte limit"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(DiscoveryError::Http {
                status: status.as_u16(),
                message: text.chars().take(200).collect(),
            });
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls() {
        assert!(DiscoveryClient::new("http://127.0.0.1:8080/").is_ok());
        for bad in ["", "127.0.0.1:8080", "ftp://x", "http://", "http://a b"] {
            assert!(
                matches!(DiscoveryClient::new(bad), Err(DiscoveryError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_dead_service_is_unreachable_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = DiscoveryClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = client.fetch().await.unwrap_err();
        assert!(matches!(e, DiscoveryError::Unreachable(_)), "{e}");
    }
}
