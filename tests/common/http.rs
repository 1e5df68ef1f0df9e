//! HTTP helpers for the management-plane tests: find the plane's address in
//! the server's log, speak HTTP/1.1 to it over a plain TCP socket, and read
//! a Prometheus exposition into samples that can be summed by label.

use super::{Server, TIMEOUT};
use presence_mgmt::serde_json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The management plane's address, from the `management plane listening on
/// http://ADDR` log line (logged after the SIP one the harness waits for).
pub fn mgmt_addr(server: &Server) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = server.log.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "no 'management plane listening' line in the log; saw:\n{}",
                seen.join("\n")
            )
        });
        if let Some(rest) = line.split("management plane listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or("");
            return addr.parse().unwrap_or_else(|_| panic!("bad address in {line:?}"));
        }
        seen.push(line);
    }
}

/// Wait until a log line contains `needle`; the line, or None after `timeout`.
pub fn wait_for_log(server: &Server, needle: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = server.log.recv_timeout(left).ok()?;
        if line.contains(needle) {
            return Some(line);
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A client of the management plane.
pub struct Mgmt {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Mgmt {
    pub fn of(server: &Server) -> Self {
        Mgmt {
            addr: mgmt_addr(server),
            token: None,
        }
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        self.send("GET", path, &[], None)
    }

    pub fn put(&self, path: &str, body: &str) -> HttpResponse {
        self.send("PUT", path, &[("Content-Type", "application/json")], Some(body))
    }

    pub fn delete(&self, path: &str) -> HttpResponse {
        self.send("DELETE", path, &[], None)
    }

    /// One request on a new connection (`Connection: close`), with the
    /// bearer token when the client has one.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> HttpResponse {
        let mut stream = TcpStream::connect_timeout(&self.addr, TIMEOUT).expect("connect to the management plane");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(token) = &self.token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method == "PUT" {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).expect("HTTP write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("HTTP read (timeout?)");
        parse_response(&raw)
    }
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    HttpResponse { status, headers, body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(rest.get(..size).unwrap_or(rest));
        body = rest.get(size + 2..).unwrap_or("");
    }
    out
}

/// One sample of an exposition: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a Prometheus text exposition (comments skipped).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                parse_labels(rest.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"))),
            ),
            None => (series, BTreeMap::new()),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad labels {text:?}"));
        // Values here never hold escaped quotes (label values are ours).
        let (value, after) = after.split_once('"').unwrap_or_else(|| panic!("bad labels {text:?}"));
        labels.insert(key.trim_start_matches(',').to_owned(), value.to_owned());
        rest = after.trim_start_matches(',');
    }
    labels
}

/// Sum of every sample named `name` whose labels include all of `wanted`.
pub fn sum(samples: &[Sample], name: &str, wanted: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            wanted
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Whether any sample has this name.
pub fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}
