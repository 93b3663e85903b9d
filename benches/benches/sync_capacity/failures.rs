//! Failed requests, counted by kind, with examples of what came back.

use std::collections::BTreeMap;

/// Distinct examples kept for each kind of error.
const EXAMPLES_PER_KIND: usize = 3;

/// A failed request: what failed how, and a snippet of what came back.
pub struct Failure {
    pub kind: String,
    pub detail: String,
}

/// Every failure, by kind.
#[derive(Default)]
pub struct Errors(pub BTreeMap<String, Tally>);

#[derive(Default)]
pub struct Tally {
    pub count: u64,
    pub examples: Vec<String>,
}

impl Errors {
    pub fn add(&mut self, failure: Failure) {
        let tally = self.0.entry(failure.kind).or_default();
        tally.count += 1;
        if tally.examples.len() < EXAMPLES_PER_KIND && !tally.examples.contains(&failure.detail) {
            tally.examples.push(failure.detail);
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().map(|t| t.count).sum()
    }
}

/// The response if it is a success; else the failure, with the status and
/// the start of the body, or the transport error.
pub async fn checked(op: &str, result: reqwest::Result<reqwest::Response>) -> Result<reqwest::Response, Failure> {
    match result {
        Ok(response) if response.status().is_success() => Ok(response),
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_else(|e| format!("(body unreadable: {e})"));
            Err(Failure { kind: format!("{op}: HTTP {status}"), detail: snippet(&body) })
        }
        Err(e) => Err(transport(op, &e)),
    }
}

/// A request that got no usable answer, by how it failed.
pub fn transport(op: &str, e: &reqwest::Error) -> Failure {
    let how = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_decode() {
        "undecodable answer"
    } else if e.is_body() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "transport"
    };
    let mut detail = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        detail.push_str(": ");
        detail.push_str(&c.to_string());
        cause = c.source();
    }
    Failure { kind: format!("{op}: {how}"), detail: snippet(&detail) }
}

/// The first 160 characters of `text`, on one line.
fn snippet(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(160).collect()
}
