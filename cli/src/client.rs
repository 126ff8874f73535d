//! A small blocking client for a node's HTTP API.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use serde_json::Value;

/// The default node: validator 0 of the local testnet.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:8000";
/// Largest answer read by default (a full block's JSON fits).
pub const ANSWER_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Times a GET is asked again while the node says it is busy (503 with
/// `Retry-After`).
pub const BUSY_RETRIES: u32 = 5;
/// Longest wait between those tries, whatever `Retry-After` says.
pub const BUSY_WAIT_MAX: Duration = Duration::from_secs(5);

/// What a GET does with a 503 that names a `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// Ask again after the wait it names, up to [`BUSY_RETRIES`] times: for a
    /// one-shot question.
    WaitOutBusy,
    /// Return the 503 at once: for a caller that polls on its own clock and
    /// would otherwise sleep a whole second on a proof that is a block away.
    Poll,
}

/// A node's API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    busy_retries: u32,
}

impl Client {
    /// A client for the node at `url` (e.g. `http://127.0.0.1:8000`).
    pub fn new(url: &str) -> Self {
        Self::with_timeout(url, Duration::from_secs(30))
    }

    /// [`Client::new`] whose requests give up after `timeout` (a node that hangs
    /// is then treated like one that is down).
    pub fn with_timeout(url: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            base: url.trim_end_matches('/').to_string(),
            agent,
            busy_retries: BUSY_RETRIES,
        }
    }

    /// This client, treating a busy node's 503 as `patience` says.
    pub fn with_patience(mut self, patience: Patience) -> Self {
        self.busy_retries = match patience {
            Patience::WaitOutBusy => BUSY_RETRIES,
            Patience::Poll => 0,
        };
        self
    }

    /// The node's URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the node at {}: {e}. Is it running? Start a local testnet with testnet/run.sh, or pass --node URL",
            self.base
        )
    }

    fn answer(
        &self,
        path: &str,
        response: ureq::http::Response<ureq::Body>,
    ) -> Result<(u16, Value)> {
        self.answer_within(path, response, ANSWER_BYTES_MAX)
    }

    fn answer_within(
        &self,
        path: &str,
        mut response: ureq::http::Response<ureq::Body>,
        limit: u64,
    ) -> Result<(u16, Value)> {
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_string()
            .map_err(|e| anyhow!("reading the answer to {path} from {}: {e}", self.base))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// GET `path`; a non-2xx answer becomes an error with the node's message.
    pub fn get(&self, path: &str) -> Result<Value> {
        let (status, value) = self.get_raw(path)?;
        if !(200..300).contains(&status) {
            bail!("{}", error_text(status, &value));
        }
        Ok(value)
    }

    /// GET `url`, asking again (up to `busy_retries` times) while the node
    /// answers 503 with `Retry-After` (its heavy reads are all taken), after the
    /// wait it names (at most [`BUSY_WAIT_MAX`]).
    fn call_get(&self, url: &str) -> Result<ureq::http::Response<ureq::Body>> {
        let mut tries = 0;
        loop {
            let response = self
                .agent
                .get(url)
                .call()
                .map_err(|e| self.unreachable(e))?;
            let wait = (response.status().as_u16() == 503)
                .then(|| response.headers().get("retry-after"))
                .flatten()
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
            match wait {
                Some(secs) if tries < self.busy_retries => {
                    tries += 1;
                    std::thread::sleep(Duration::from_secs(secs).min(BUSY_WAIT_MAX));
                }
                _ => return Ok(response),
            }
        }
    }

    /// GET `path`: status and body, whatever the status.
    pub fn get_raw(&self, path: &str) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let response = self.call_get(&url)?;
        self.answer(path, response)
    }

    /// GET `path`, an answer of at most `limit` bytes parsed as JSON while it is
    /// read (no copy of the text is kept); a non-2xx answer becomes an error.
    pub fn get_json_within(&self, path: &str, limit: u64) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut response = self.call_get(&url)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let (status, value) = self.answer_within(path, response, 64 * 1024)?;
            bail!("{}", error_text(status, &value));
        }
        let reader = response.body_mut().with_config().limit(limit).reader();
        serde_json::from_reader(std::io::BufReader::new(reader)).map_err(|e| {
            anyhow!(
                "the answer to {path} from {} is not JSON within {limit} bytes: {e}",
                self.base
            )
        })
    }

    /// GET `path` as text (metrics).
    pub fn get_text(&self, path: &str) -> Result<String> {
        match self.get_raw(path)? {
            (200, Value::String(text)) => Ok(text),
            (200, other) => Ok(other.to_string()),
            (status, value) => bail!("{}", error_text(status, &value)),
        }
    }

    /// POST JSON: status and body, whatever the status.
    pub fn post(&self, path: &str, body: &impl Serialize) -> Result<(u16, Value)> {
        let bytes = serde_json::to_vec(body)?;
        self.post_json_bytes(path, &bytes)
    }

    /// POST a body that already is JSON: status and body, whatever the status.
    pub fn post_json_bytes(&self, path: &str, bytes: &[u8]) -> Result<(u16, Value)> {
        self.post_bytes(path, "application/json", bytes)
    }

    /// POSTs the canonical binary encoding (`application/octet-stream`) of a signed
    /// transfer or a list of them.
    pub fn post_binary(&self, path: &str, bytes: &[u8]) -> Result<(u16, Value)> {
        self.post_bytes(path, "application/octet-stream", bytes)
    }

    fn post_bytes(&self, path: &str, content_type: &str, bytes: &[u8]) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .post(&url)
            .header("content-type", content_type)
            .send(bytes)
            .map_err(|e| self.unreachable(e))?;
        self.answer(path, response)
    }
}

/// The node's error message, or the status.
pub fn error_text(status: u16, value: &Value) -> String {
    match value.get("error").and_then(Value::as_str) {
        Some(message) => format!("node answered {status}: {message}"),
        None => format!("node answered {status}: {value}"),
    }
}
