//! The route table: every endpoint the management plane serves, with the
//! access it needs. The router and the OpenAPI conformance test both read
//! this one table, so the served routes and the document cannot drift apart.

use crate::auth::Access;

/// What a matched request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /metrics`: the Prometheus exposition.
    Metrics,
    /// `GET /healthz`: the process is alive.
    Healthz,
    /// `GET /readyz`: every shard answers in time.
    Readyz,
    /// `GET /v1/presentities/{aor}`: composed state and publications.
    Presentity,
    /// `GET /v1/presentities/{aor}/watchers`: a presentity's subscriptions.
    Watchers,
    /// `GET /v1/subscriptions?watcher=URI`: a watcher's subscriptions.
    Subscriptions,
    /// `DELETE /v1/subscriptions/{id}`: end a subscription with a final NOTIFY.
    EndSubscription,
    /// `GET /v1/stats`: the JSON summary.
    Stats,
    /// `GET /v1/config/notify`: NOTIFY pacing in force.
    GetNotifyConfig,
    /// `PUT /v1/config/notify`: change NOTIFY pacing.
    PutNotifyConfig,
    /// `GET /v1/config/log`: the log filter.
    GetLogConfig,
    /// `PUT /v1/config/log`: change the log filter.
    PutLogConfig,
    /// `GET` a presentity's pres-rules document (XCAP).
    GetPresRules,
    /// `PUT` a presentity's pres-rules document (XCAP).
    PutPresRules,
    /// `DELETE` a presentity's pres-rules document (XCAP).
    DeletePresRules,
    /// `PUT` one watcher's authorization for a presentity.
    PutAuthorization,
    /// `DELETE` one watcher's authorization for a presentity.
    DeleteAuthorization,
}

/// One served route: method, path template (`{name}` is one segment), access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The HTTP method.
    pub method: &'static str,
    /// The path template.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What it does.
    pub endpoint: Endpoint,
}

/// Every route the plane serves (`openapi.yaml` describes the same set).
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/metrics",
        access: Access::Read,
        endpoint: Endpoint::Metrics,
    },
    Route {
        method: "GET",
        path: "/healthz",
        access: Access::Probe,
        endpoint: Endpoint::Healthz,
    },
    Route {
        method: "GET",
        path: "/readyz",
        access: Access::Probe,
        endpoint: Endpoint::Readyz,
    },
    Route {
        method: "GET",
        path: "/v1/presentities/{aor}",
        access: Access::Read,
        endpoint: Endpoint::Presentity,
    },
    Route {
        method: "GET",
        path: "/v1/presentities/{aor}/watchers",
        access: Access::Read,
        endpoint: Endpoint::Watchers,
    },
    Route {
        method: "GET",
        path: "/v1/subscriptions",
        access: Access::Read,
        endpoint: Endpoint::Subscriptions,
    },
    Route {
        method: "DELETE",
        path: "/v1/subscriptions/{id}",
        access: Access::Write,
        endpoint: Endpoint::EndSubscription,
    },
    Route {
        method: "GET",
        path: "/v1/stats",
        access: Access::Read,
        endpoint: Endpoint::Stats,
    },
    Route {
        method: "GET",
        path: "/v1/config/notify",
        access: Access::Read,
        endpoint: Endpoint::GetNotifyConfig,
    },
    Route {
        method: "PUT",
        path: "/v1/config/notify",
        access: Access::Write,
        endpoint: Endpoint::PutNotifyConfig,
    },
    Route {
        method: "GET",
        path: "/v1/config/log",
        access: Access::Read,
        endpoint: Endpoint::GetLogConfig,
    },
    Route {
        method: "PUT",
        path: "/v1/config/log",
        access: Access::Write,
        endpoint: Endpoint::PutLogConfig,
    },
    Route {
        method: "GET",
        path: "/xcap-root/pres-rules/users/{aor}/index",
        access: Access::Read,
        endpoint: Endpoint::GetPresRules,
    },
    Route {
        method: "PUT",
        path: "/xcap-root/pres-rules/users/{aor}/index",
        access: Access::Write,
        endpoint: Endpoint::PutPresRules,
    },
    Route {
        method: "DELETE",
        path: "/xcap-root/pres-rules/users/{aor}/index",
        access: Access::Write,
        endpoint: Endpoint::DeletePresRules,
    },
    Route {
        method: "PUT",
        path: "/v1/presentities/{aor}/authorizations/{watcher}",
        access: Access::Write,
        endpoint: Endpoint::PutAuthorization,
    },
    Route {
        method: "DELETE",
        path: "/v1/presentities/{aor}/authorizations/{watcher}",
        access: Access::Write,
        endpoint: Endpoint::DeleteAuthorization,
    },
];

/// The outcome of routing a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed {
    /// A route matched; `params` are the decoded `{name}` segments in order.
    Found {
        /// The route.
        route: &'static Route,
        /// Its `{name}` segments, decoded.
        params: Vec<String>,
    },
    /// The path exists, not with this method; `allow` lists the methods.
    MethodNotAllowed {
        /// The methods the path has.
        allow: Vec<&'static str>,
    },
    /// No route has this path.
    NotFound,
    /// A path segment is not valid percent-encoded UTF-8.
    BadPath,
}

/// Match a request against the table.
pub fn route(method: &str, path: &str) -> Routed {
    let mut allow = Vec::new();
    for route in ROUTES {
        match match_path(route.path, path) {
            Some(Ok(params)) if route.method == method => return Routed::Found { route, params },
            Some(Ok(_)) => allow.push(route.method),
            Some(Err(())) => return Routed::BadPath,
            None => {}
        }
    }
    if allow.is_empty() {
        Routed::NotFound
    } else {
        Routed::MethodNotAllowed { allow }
    }
}

/// `None` if the template does not match; the decoded parameters if it does.
fn match_path(template: &str, path: &str) -> Option<Result<Vec<String>, ()>> {
    let mut params = Vec::new();
    let mut wanted = template.split('/');
    let mut given = path.split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return Some(Ok(params)),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                if g.is_empty() {
                    return None;
                }
                match percent_decode(g) {
                    Some(value) => params.push(value),
                    None => return Some(Err(())),
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

/// Decode `%XX` escapes (and, in a query, `+` as a space).
fn decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Decode one percent-encoded path segment (`None`: not valid UTF-8 or a bad escape).
pub fn percent_decode(segment: &str) -> Option<String> {
    decode(segment, false)
}

/// A query string that is not valid percent-encoded UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the query is not valid percent-encoded UTF-8")]
pub struct BadQuery;

/// The decoded value of a query parameter.
pub fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, BadQuery> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(key, true).ok_or(BadQuery)? == name {
            return decode(value, true).map(Some).ok_or(BadQuery);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_templates_and_decode_parameters() {
        match route("GET", "/v1/presentities/sip%3Aalice%40example.com/watchers") {
            Routed::Found { route, params } => {
                assert_eq!(route.endpoint, Endpoint::Watchers);
                assert_eq!(params, vec!["sip:alice@example.com"]);
            }
            other => panic!("{other:?}"),
        }
        match route("GET", "/v1/presentities/sip:bob@example.com") {
            Routed::Found { route, params } => {
                assert_eq!(route.endpoint, Endpoint::Presentity);
                assert_eq!(params, vec!["sip:bob@example.com"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(route("GET", "/v1/presentities/"), Routed::NotFound);
        assert_eq!(route("GET", "/nope"), Routed::NotFound);
        assert_eq!(route("GET", "/v1/presentities/%zz"), Routed::BadPath);
        assert_eq!(
            route("POST", "/v1/config/notify"),
            Routed::MethodNotAllowed {
                allow: vec!["GET", "PUT"]
            }
        );
        assert_eq!(
            route("GET", "/v1/subscriptions/1x2"),
            Routed::MethodNotAllowed { allow: vec!["DELETE"] }
        );
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(
            query_param(Some("x=1&watcher=sip%3Abob%40example.com"), "watcher"),
            Ok(Some("sip:bob@example.com".into()))
        );
        assert_eq!(query_param(Some("watcher=a+b"), "watcher"), Ok(Some("a b".into())));
        assert_eq!(query_param(Some("other=1"), "watcher"), Ok(None));
        assert_eq!(query_param(None, "watcher"), Ok(None));
        assert_eq!(query_param(Some("watcher=%e2%28"), "watcher"), Err(BadQuery));
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in ROUTES.iter().skip(i + 1) {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} twice",
                    a.method,
                    a.path
                );
            }
        }
    }
}
