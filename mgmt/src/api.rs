//! Request handling: route, authorize, then serve each endpoint by asking the
//! shards by message. A refused request (401) or a malformed one (400) is
//! answered before anything is sent to a shard, so it changes nothing.

use crate::auth::Refusal;
use crate::http::{error_response, json_body, json_response, presentity_owner, ApiError, HttpResponse, State};
use crate::metrics::{Format, Scrape, ShardSnapshot};
use crate::routes::{self, Endpoint, Routed};
use crate::summary::Summary;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use presence_proto::config::NotifyConfig;
use presence_proto::routing;
use presence_proto::sip::uri::Uri;
use serde::{Deserialize, Serialize};

fn text_response(status: StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn refused(refusal: Refusal) -> HttpResponse {
    let mut response = error_response(&ApiError::new(StatusCode::UNAUTHORIZED, refusal.to_string()));
    let challenge = match refusal {
        Refusal::WrongToken => "Bearer realm=\"presenced\", error=\"invalid_token\"",
        Refusal::MissingToken | Refusal::NoTokenConfigured => "Bearer realm=\"presenced\"",
    };
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

/// Serve one request. Never fails: every problem becomes a response.
pub async fn handle(state: &State, request: Request<Incoming>) -> HttpResponse {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let (route, params) = match routes::route(&method, &path) {
        Routed::Found { route, params } => (route, params),
        Routed::NotFound => return error_response(&ApiError::not_found(format!("no such endpoint: {path}"))),
        Routed::BadPath => {
            return error_response(&ApiError::bad_request("the path is not valid percent-encoded UTF-8"))
        }
        Routed::MethodNotAllowed { allow } => {
            let mut response = error_response(&ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}"),
            ));
            if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                response.headers_mut().insert(ALLOW, value);
            }
            return response;
        }
    };
    let authorization = request.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    if let Err(refusal) = state.auth.check(route.access, authorization) {
        tracing::debug!(%method, %path, %refusal, "management request refused");
        return refused(refusal);
    }
    let result = match route.endpoint {
        Endpoint::Healthz => Ok(text_response(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".into(),
        )),
        Endpoint::Readyz => Ok(readyz(state).await),
        Endpoint::Metrics => metrics(state, &request).await,
        Endpoint::Stats => stats(state).await,
        Endpoint::Presentity => presentity(state, params.first()).await,
        Endpoint::Watchers => watchers(state, params.first()).await,
        Endpoint::Subscriptions => subscriptions(state, request.uri().query()).await,
        Endpoint::EndSubscription => end_subscription(state, params.first()).await,
        Endpoint::GetNotifyConfig => get_notify_config(state).await,
        Endpoint::PutNotifyConfig => put_notify_config(state, request).await,
        Endpoint::GetLogConfig => Ok(get_log_config(state)),
        Endpoint::PutLogConfig => put_log_config(state, request).await,
        Endpoint::GetPresRules => crate::xcap::get_rules(state, params.first()).await,
        Endpoint::PutPresRules => crate::xcap::put_rules(state, params.first(), request).await,
        Endpoint::DeletePresRules => crate::xcap::delete_rules(state, params.first(), request).await,
        Endpoint::PutAuthorization => {
            crate::xcap::put_authorization(state, params.first(), params.get(1), request).await
        }
        Endpoint::DeleteAuthorization => crate::xcap::delete_authorization(state, params.first(), params.get(1)).await,
    };
    let response = result.unwrap_or_else(|error| error_response(&error));
    tracing::debug!(%method, %path, status = response.status().as_u16(), "management request");
    response
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    shards: usize,
    not_ready: Vec<NotReady>,
}

#[derive(Serialize)]
struct NotReady {
    shard: usize,
    error: String,
}

async fn readyz(state: &State) -> HttpResponse {
    let answers = state.shards.ask_all(|_, _| ()).await;
    let not_ready: Vec<NotReady> = answers
        .into_iter()
        .enumerate()
        .filter_map(|(shard, answer)| {
            answer.err().map(|error| NotReady {
                shard,
                error: error.to_string(),
            })
        })
        .collect();
    let ready = not_ready.is_empty() && state.shards.count() > 0;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &Readiness {
            ready,
            shards: state.shards.count(),
            not_ready,
        },
    )
}

async fn snapshots(state: &State) -> Vec<Option<ShardSnapshot>> {
    let answers = state.shards.ask_all(|shard, _| ShardSnapshot::take(shard)).await;
    answers.into_iter().map(Result::ok).collect()
}

async fn metrics(state: &State, request: &Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let accept = request
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let control_queue = (0..state.shards.count())
        .map(|shard| state.shards.queue_depth(shard))
        .collect();
    let shards = snapshots(state).await;
    let guard = crate::guard_metrics::GuardMetrics::new(&shards, state.connections.counts());
    let store = state
        .store
        .as_ref()
        .map(|store| crate::store_metrics::StoreScrape::of(&store.metrics(), store.engine_stats()));
    let scrape = Scrape {
        shards,
        control_queue,
        guard,
        store,
    };
    let text = scrape
        .encode(format)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics"))?;
    Ok(text_response(StatusCode::OK, format.content_type(), text))
}

async fn stats(state: &State) -> Result<HttpResponse, ApiError> {
    let shards = snapshots(state).await;
    let summary = Summary::build(state.started.elapsed().as_secs(), &shards);
    Ok(json_response(StatusCode::OK, &summary))
}

async fn presentity(state: &State, aor: Option<&String>) -> Result<HttpResponse, ApiError> {
    let (aor, owner) = presentity_owner(state, aor)?;
    let key = aor.clone();
    let view = state
        .shards
        .ask(owner, move |shard, now| shard.inspect_presentity(&key, now))
        .await?;
    match view {
        Some(view) => Ok(json_response(StatusCode::OK, &view)),
        None => Err(ApiError::not_found(format!("no presence state for {aor}"))),
    }
}

#[derive(Serialize)]
struct WatcherList {
    presentity: String,
    watchers: Vec<presence_proto::inspect::SubscriptionView>,
}

async fn watchers(state: &State, aor: Option<&String>) -> Result<HttpResponse, ApiError> {
    let (aor, owner) = presentity_owner(state, aor)?;
    let key = aor.clone();
    let watchers = state
        .shards
        .ask(owner, move |shard, now| shard.inspect_watchers(&key, now))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &WatcherList {
            presentity: aor,
            watchers,
        },
    ))
}

#[derive(Serialize)]
struct SubscriptionList {
    watcher: String,
    subscriptions: Vec<presence_proto::inspect::SubscriptionView>,
}

async fn subscriptions(state: &State, query: Option<&str>) -> Result<HttpResponse, ApiError> {
    let watcher = routes::query_param(query, "watcher")
        .map_err(|error| ApiError::bad_request(error.to_string()))?
        .ok_or_else(|| ApiError::bad_request("the watcher query parameter is required (?watcher=URI)"))?;
    let uri = Uri::parse(&watcher).map_err(|_| ApiError::bad_request(format!("not a SIP URI: {watcher}")))?;
    let mut watcher_aor = String::with_capacity(watcher.len());
    uri.write_aor(&mut watcher_aor);
    // A watcher's subscriptions live with the presentities it watches, on any shard.
    let key = watcher_aor.clone();
    let answers = state
        .shards
        .ask_all(move |shard, now| shard.inspect_subscriptions_of(&key, now))
        .await;
    let mut subscriptions = Vec::new();
    for answer in answers {
        subscriptions.extend(answer?);
    }
    Ok(json_response(
        StatusCode::OK,
        &SubscriptionList {
            watcher: watcher_aor,
            subscriptions,
        },
    ))
}

#[derive(Serialize)]
struct Terminated {
    terminated: presence_proto::inspect::SubscriptionView,
}

async fn end_subscription(state: &State, id: Option<&String>) -> Result<HttpResponse, ApiError> {
    let id = id.cloned().unwrap_or_default();
    let shards = u16::try_from(state.shards.count()).unwrap_or(u16::MAX);
    let Some(owner) = routing::owner_of_id(&id, shards) else {
        return Err(ApiError::not_found(format!("no such subscription: {id}")));
    };
    let key = id.clone();
    let ended = state
        .shards
        .ask(usize::from(owner), move |shard, now| {
            shard.terminate_subscription(&key, now)
        })
        .await?;
    match ended {
        Some(view) => Ok(json_response(StatusCode::OK, &Terminated { terminated: view })),
        None => Err(ApiError::not_found(format!("no such subscription: {id}"))),
    }
}

async fn get_notify_config(state: &State) -> Result<HttpResponse, ApiError> {
    // Every shard holds the same value (PUT sets all); shard 0 speaks for them.
    let config = state.shards.ask(0, |shard, _| *shard.notify_config()).await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn put_notify_config(state: &State, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let config: NotifyConfig = json_body(request).await?;
    config.validate().map_err(ApiError::bad_request)?;
    let answers = state
        .shards
        .ask_all(move |shard, _| shard.set_notify_config(config))
        .await;
    let failed: Vec<String> = answers
        .into_iter()
        .filter_map(|a| a.err())
        .map(|e| e.to_string())
        .collect();
    if !failed.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not applied everywhere ({}); retry the PUT", failed.join("; ")),
        ));
    }
    Ok(json_response(StatusCode::OK, &config))
}

/// Body of `/v1/config/log`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LogFilter {
    /// A `tracing` filter directive, as in RUST_LOG (e.g. `info,presence_proto=debug`).
    filter: String,
}

fn get_log_config(state: &State) -> HttpResponse {
    let filter = state.log_filter.lock().map(|f| f.clone()).unwrap_or_default();
    json_response(StatusCode::OK, &LogFilter { filter })
}

async fn put_log_config(state: &State, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let Some(log) = &state.log else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this process cannot change its log filter",
        ));
    };
    let body: LogFilter = json_body(request).await?;
    let filter = body.filter.trim().to_owned();
    if filter.is_empty() {
        return Err(ApiError::bad_request("the filter is empty"));
    }
    (log.set)(&filter).map_err(|reason| ApiError::bad_request(format!("invalid log filter: {reason}")))?;
    if let Ok(mut current) = state.log_filter.lock() {
        current.clone_from(&filter);
    }
    Ok(json_response(StatusCode::OK, &LogFilter { filter }))
}
