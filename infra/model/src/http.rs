//! SageMaker inference container contract: `GET /ping` and `POST /invocations`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;

use crate::ModelConfig;
use crate::model::{IrisModel, NUM_FEATURES, Prediction};
use crate::runtime::Slots;

/// Largest accepted invocation body (SageMaker's 6 MB real-time payload limit), in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// Request header echoed back on `/invocations` responses (with the metering element appended
/// on success).
pub const CUSTOM_ATTRIBUTES_HEADER: &str = "x-amzn-sagemaker-custom-attributes";

/// AWS Marketplace's per-inference metering header, answered on every success with
/// `ConsumedUnits` = the rows scored, so a seller copying this model bills per record.
pub const METERING_HEADER: &str = "x-amzn-inference-metering";

/// Custom attribute repeating `ConsumedUnits` (`sealbox-consumed-units=N`): SageMaker's
/// `InvokeEndpoint` hands its caller no container header but the custom attributes, so this is
/// how sealbox's worker on AWS sees what was metered.
pub const CONSUMED_UNITS_ATTRIBUTE: &str = "sealbox-consumed-units";

/// SageMaker's limit on custom attributes, in characters.
const MAX_CUSTOM_ATTRIBUTES: usize = 1024;

pub(crate) const CSV: &str = "text/csv";
pub(crate) const JSON: &str = "application/json";

/// State shared by the container routes and the SageMaker Runtime routes.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) model: Arc<IrisModel>,
    pub(crate) latency: Duration,
    /// Runtime-API invocation slots; `None` means unlimited.
    pub(crate) slots: Option<Slots>,
    pub(crate) not_ready: bool,
}

impl AppState {
    pub(crate) fn new(model: Arc<IrisModel>, cfg: ModelConfig) -> Self {
        AppState {
            model,
            latency: cfg.latency,
            slots: cfg.max_concurrency.map(Slots::new),
            not_ready: cfg.not_ready,
        }
    }
}

/// Builds the router for `model`: the container contract (`GET /ping`, `POST /invocations`)
/// plus the SageMaker Runtime API (`POST /endpoints/{name}/invocations`).
pub fn router(model: Arc<IrisModel>, cfg: ModelConfig) -> Router {
    router_with_state(AppState::new(model, cfg))
}

pub(crate) fn router_with_state(state: AppState) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route(
            "/invocations",
            post(invocations).layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES)),
        )
        .merge(crate::runtime::routes())
        .with_state(state)
}

async fn ping() -> Json<Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The container's `POST /invocations`; the Runtime API calls it as SageMaker calls the container.
pub(crate) async fn invocations(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    let asked = headers.get(CUSTOM_ATTRIBUTES_HEADER).cloned();
    let (mut response, scored) = match invoke(&state.model, &headers, body) {
        Ok((response, scored)) => (response, Some(scored)),
        Err(err) => (err.into_response(), None),
    };
    let attrs = match scored {
        Some(rows) => {
            let metering = format!(r#"{{"Dimension":"inference.count","ConsumedUnits":{rows}}}"#);
            if let Ok(v) = HeaderValue::try_from(metering) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(METERING_HEADER), v);
            }
            with_consumed_units(asked, rows)
        }
        None => asked,
    };
    if let Some(attrs) = attrs {
        response
            .headers_mut()
            .insert(HeaderName::from_static(CUSTOM_ATTRIBUTES_HEADER), attrs);
    }
    response
}

/// The caller's custom attributes with `sealbox-consumed-units=<rows>` appended, or the
/// caller's alone (unchanged) when appending would pass SageMaker's 1024 characters.
fn with_consumed_units(asked: Option<HeaderValue>, rows: usize) -> Option<HeaderValue> {
    let element = format!("{CONSUMED_UNITS_ATTRIBUTE}={rows}");
    let joined = match asked.as_ref().map(HeaderValue::to_str) {
        None => element,
        Some(Ok(a)) if a.trim().is_empty() => element,
        Some(Ok(a)) => format!("{a}, {element}"),
        Some(Err(_)) => return asked,
    };
    if joined.len() > MAX_CUSTOM_ATTRIBUTES {
        return asked;
    }
    HeaderValue::try_from(joined).ok().or(asked)
}

/// The answer and the number of rows it scored.
fn invoke(
    model: &IrisModel,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Response, usize), ApiError> {
    let input = input_format(headers)?;
    let output = output_format(headers, input)?;
    let body = body.map_err(ApiError::from_rejection)?;
    let rows = match input {
        Format::Csv => parse_csv(&body)?,
        Format::Json => parse_json(&body)?,
    };
    Ok((render(output, &model.predict(&rows))?, rows.len()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Json,
}

impl Format {
    fn mime(self) -> &'static str {
        match self {
            Format::Csv => CSV,
            Format::Json => JSON,
        }
    }
}

fn input_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("missing Content-Type; send {CSV} or {JSON}"),
        ));
    };
    let raw = value.to_str().unwrap_or("<non-ASCII>");
    let essence = raw.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(CSV) {
        Ok(Format::Csv)
    } else if essence.eq_ignore_ascii_case(JSON) {
        Ok(Format::Json)
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Type {raw:?}; send {CSV} or {JSON}"),
        ))
    }
}

/// Picks the response format from `Accept` (highest q first, then header order);
/// a missing/empty header or `*/*` means "same as the input".
fn output_format(headers: &HeaderMap, input: Format) -> Result<Format, ApiError> {
    let mut ranges: Vec<(f32, Format)> = Vec::new();
    let mut seen_any = false;
    for value in headers.get_all(ACCEPT) {
        let raw = value.to_str().map_err(|_| not_acceptable("<non-ASCII>"))?;
        for range in raw.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            if media.is_empty() {
                continue;
            }
            seen_any = true;
            let mut q = 1.0_f32;
            for param in parts {
                if let Some((name, val)) = param.split_once('=')
                    && name.trim().eq_ignore_ascii_case("q")
                {
                    q = val.trim().parse().unwrap_or(1.0);
                }
            }
            let format = match media.to_ascii_lowercase().as_str() {
                "*/*" => Some(input),
                CSV | "text/*" => Some(Format::Csv),
                JSON | "application/*" => Some(Format::Json),
                _ => None,
            };
            if let Some(format) = format
                && q > 0.0
            {
                ranges.push((q, format));
            }
        }
    }
    if !seen_any {
        return Ok(input);
    }
    // Stable sort keeps header order among equal q values.
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    match ranges.first() {
        Some(&(_, format)) => Ok(format),
        None => {
            let raw: Vec<&str> = headers
                .get_all(ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            Err(not_acceptable(&raw.join(", ")))
        }
    }
}

fn not_acceptable(accept: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        format!("unsupported Accept {accept:?}; accept {CSV}, {JSON} or */*"),
    )
}

fn empty_body() -> ApiError {
    ApiError::bad_row(
        1,
        format!("empty body: expected at least one row of {NUM_FEATURES} numbers"),
    )
}

/// Parses `text/csv`: one row per line, exactly 4 comma-separated finite numbers, no header.
/// Trailing blank lines are ignored.
fn parse_csv(body: &[u8]) -> Result<Vec<[f64; NUM_FEATURES]>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let line = 1 + body[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        ApiError::bad_row(line, "body is not valid UTF-8".to_owned())
    })?;
    let text = text.trim_end_matches(['\n', '\r', ' ', '\t']);
    if text.trim().is_empty() {
        return Err(empty_body());
    }
    let mut rows = Vec::with_capacity(text.len() / 16 + 1);
    for (idx, line) in text.split('\n').enumerate() {
        let n = idx + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            return Err(ApiError::bad_row(
                n,
                format!("empty line; expected {NUM_FEATURES} comma-separated numbers"),
            ));
        }
        let columns = line.split(',').count();
        if columns != NUM_FEATURES {
            return Err(ApiError::bad_row(
                n,
                format!("expected {NUM_FEATURES} columns, got {columns}"),
            ));
        }
        let mut row = [0.0; NUM_FEATURES];
        for (col, (slot, field)) in row.iter_mut().zip(line.split(',')).enumerate() {
            let field = field.trim();
            let value: f64 = field.parse().map_err(|_| {
                ApiError::bad_row(n, format!("column {}: {field:?} is not a number", col + 1))
            })?;
            if !value.is_finite() {
                return Err(ApiError::bad_row(
                    n,
                    format!("column {}: {field:?} is not a finite number", col + 1),
                ));
            }
            *slot = value;
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Parses `application/json`: `{"instances": [[f, f, f, f], ...]}` or a bare array of rows.
/// For row errors `line` is the 1-based instance index; for syntax errors, the JSON text line.
fn parse_json(body: &[u8]) -> Result<Vec<[f64; NUM_FEATURES]>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(empty_body());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_row(e.line().max(1), format!("invalid JSON: {e}")))?;
    const SHAPE: &str = "expected {\"instances\": [[f, f, f, f], ...]} or [[f, f, f, f], ...]";
    let instances = match &value {
        Value::Array(items) => items,
        Value::Object(map) => match map.get("instances") {
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(ApiError::bad_row(
                    1,
                    format!("\"instances\" is not an array; {SHAPE}"),
                ));
            }
            None => {
                return Err(ApiError::bad_row(
                    1,
                    format!("missing \"instances\"; {SHAPE}"),
                ));
            }
        },
        _ => return Err(ApiError::bad_row(1, SHAPE.to_owned())),
    };
    if instances.is_empty() {
        return Err(empty_body());
    }
    let mut rows = Vec::with_capacity(instances.len());
    for (idx, instance) in instances.iter().enumerate() {
        let n = idx + 1;
        let Some(values) = instance.as_array() else {
            return Err(ApiError::bad_row(
                n,
                format!("instance is not an array of {NUM_FEATURES} numbers"),
            ));
        };
        if values.len() != NUM_FEATURES {
            return Err(ApiError::bad_row(
                n,
                format!("expected {NUM_FEATURES} values, got {}", values.len()),
            ));
        }
        let mut row = [0.0; NUM_FEATURES];
        for (col, (slot, v)) in row.iter_mut().zip(values).enumerate() {
            match v.as_f64() {
                Some(x) if x.is_finite() => *slot = x,
                _ => {
                    return Err(ApiError::bad_row(
                        n,
                        format!("value {}: {v} is not a finite number", col + 1),
                    ));
                }
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

#[derive(Serialize)]
struct Predictions<'a> {
    predictions: &'a [Prediction],
}

fn render(format: Format, predictions: &[Prediction]) -> Result<Response, ApiError> {
    let body = match format {
        Format::Csv => {
            let mut out = String::with_capacity(predictions.len() * 32);
            for p in predictions {
                out.push_str(p.label);
                out.push(',');
                out.push_str(&p.probability.to_string());
                out.push('\n');
            }
            out.into_bytes()
        }
        Format::Json => serde_json::to_vec(&Predictions { predictions })
            .map_err(|e| ApiError::internal(format!("serialising predictions: {e}")))?,
    };
    Ok((
        [(CONTENT_TYPE, HeaderValue::from_static(format.mime()))],
        body,
    )
        .into_response())
}

/// An error answered as `{"error": "...", "line": N}` (`line` only for bad input rows).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    line: Option<usize>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
}

impl ApiError {
    fn new(status: StatusCode, message: String) -> Self {
        ApiError {
            status,
            message,
            line: None,
        }
    }

    fn bad_row(line: usize, message: String) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message,
            line: Some(line),
        }
    }

    fn internal(message: String) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    fn from_rejection(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {MAX_PAYLOAD_BYTES} bytes; split the batch"),
            )
        } else {
            Self::new(
                StatusCode::BAD_REQUEST,
                format!("could not read request body: {}", rejection.body_text()),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.message, "invocation failed");
        }
        let body = ErrorBody {
            error: &self.message,
            line: self.line,
        };
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    fn model() -> Arc<IrisModel> {
        IrisModel::shared().unwrap()
    }

    fn app() -> Router {
        router(model(), ModelConfig::default())
    }

    fn invocation(
        content_type: Option<&str>,
        accept: Option<&str>,
        body: impl Into<Body>,
    ) -> Request<Body> {
        let mut req = Request::builder().method(Method::POST).uri("/invocations");
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        req.body(body.into()).unwrap()
    }

    async fn send(app: Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn content_type(headers: &HeaderMap) -> &str {
        headers.get(CONTENT_TYPE).unwrap().to_str().unwrap()
    }

    async fn expect_bad_row(req: Request<Body>, line: u64) -> String {
        let (status, headers, body) = send(app(), req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(content_type(&headers), JSON);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["line"], line, "{body}");
        v["error"].as_str().unwrap().to_owned()
    }

    const CSV_ROWS: &str = "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n";

    #[tokio::test]
    async fn ping_returns_200() {
        let req = Request::get("/ping").body(Body::empty()).unwrap();
        let (status, _, _) = send(app(), req).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn csv_in_csv_out_by_default() {
        let (status, headers, body) = send(app(), invocation(Some(CSV), None, CSV_ROWS)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type(&headers), CSV);
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("setosa,"), "{body}");
        assert!(lines[1].starts_with("virginica,"), "{body}");
        let p: f64 = lines[0].split(',').nth(1).unwrap().parse().unwrap();
        assert!(p > 0.5 && p <= 1.0);
    }

    #[tokio::test]
    async fn csv_accepts_crlf_spaces_charset_and_no_trailing_newline() {
        let req = invocation(
            Some("text/csv; charset=utf-8"),
            Some("*/*"),
            "5.1, 3.5, 1.4, 0.2\r\n6.7,3.0,5.2,2.3",
        );
        let (status, headers, body) = send(app(), req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(content_type(&headers), CSV);
        assert_eq!(body.lines().count(), 2);
    }

    #[tokio::test]
    async fn csv_trailing_blank_lines_are_ignored() {
        let req = invocation(Some(CSV), None, "5.1,3.5,1.4,0.2\n\n\n");
        let (status, _, body) = send(app(), req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body.lines().count(), 1);
    }

    #[tokio::test]
    async fn csv_in_json_out_when_accept_is_json() {
        let (status, headers, body) =
            send(app(), invocation(Some(CSV), Some(JSON), CSV_ROWS)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type(&headers), JSON);
        let v: Value = serde_json::from_str(&body).unwrap();
        let preds = v["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), 2);
        assert_eq!(preds[0]["class"], 0);
        assert_eq!(preds[0]["label"], "setosa");
        assert!(preds[0]["probability"].as_f64().unwrap() > 0.5);
        assert_eq!(preds[1]["class"], 2);
    }

    #[tokio::test]
    async fn json_instances_in_json_out_by_default() {
        let body = r#"{"instances": [[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3]]}"#;
        let (status, headers, body) = send(app(), invocation(Some(JSON), None, body)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(content_type(&headers), JSON);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["predictions"][0]["label"], "setosa");
        assert_eq!(v["predictions"][1]["label"], "virginica");
    }

    #[tokio::test]
    async fn json_bare_array_in_csv_out_when_accept_is_csv() {
        let body = "[[5.1,3.5,1.4,0.2],[6,2.9,4.5,1.5]]";
        let (status, headers, body) = send(app(), invocation(Some(JSON), Some(CSV), body)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(content_type(&headers), CSV);
        let lines: Vec<&str> = body.lines().collect();
        assert!(lines[0].starts_with("setosa,"));
        assert!(lines[1].starts_with("versicolor,"));
    }

    #[tokio::test]
    async fn accept_list_honours_q_values_and_wildcards() {
        let req = invocation(
            Some(JSON),
            Some("application/json;q=0.5, text/csv"),
            "[[5.1,3.5,1.4,0.2]]",
        );
        let (_, headers, _) = send(app(), req).await;
        assert_eq!(content_type(&headers), CSV);
        let req = invocation(Some(CSV), Some("image/png, application/*"), CSV_ROWS);
        let (_, headers, _) = send(app(), req).await;
        assert_eq!(content_type(&headers), JSON);
    }

    #[tokio::test]
    async fn unsupported_accept_is_406() {
        let (status, _, body) = send(
            app(),
            invocation(Some(CSV), Some("application/xml"), CSV_ROWS),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
        assert!(body.contains("application/xml"), "{body}");
        let (status, _, _) =
            send(app(), invocation(Some(CSV), Some("text/csv;q=0"), CSV_ROWS)).await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    }

    #[tokio::test]
    async fn unsupported_content_type_is_415() {
        let (status, _, body) = send(app(), invocation(Some("application/x-npy"), None, "x")).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(body.contains("application/x-npy"), "{body}");
    }

    #[tokio::test]
    async fn missing_content_type_is_415() {
        let (status, _, _) = send(app(), invocation(None, None, CSV_ROWS)).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[tokio::test]
    async fn csv_wrong_column_count_is_400_with_line() {
        let err = expect_bad_row(
            invocation(Some(CSV), None, "5.1,3.5,1.4,0.2\n5.1,3.5,1.4\n"),
            2,
        )
        .await;
        assert!(err.contains("expected 4 columns, got 3"), "{err}");
    }

    #[tokio::test]
    async fn csv_header_line_is_400() {
        let body = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n";
        let err = expect_bad_row(invocation(Some(CSV), None, body), 1).await;
        assert!(err.contains("not a number"), "{err}");
    }

    #[tokio::test]
    async fn csv_nan_and_inf_are_400() {
        let err = expect_bad_row(
            invocation(Some(CSV), None, "5.1,3.5,1.4,0.2\n5.1,NaN,1.4,0.2"),
            2,
        )
        .await;
        assert!(err.contains("column 2"), "{err}");
        expect_bad_row(invocation(Some(CSV), None, "inf,3.5,1.4,0.2"), 1).await;
        expect_bad_row(invocation(Some(CSV), None, "1e400,3.5,1.4,0.2"), 1).await;
    }

    #[tokio::test]
    async fn csv_blank_line_in_the_middle_is_400() {
        expect_bad_row(
            invocation(Some(CSV), None, "5.1,3.5,1.4,0.2\n\n5.1,3.5,1.4,0.2"),
            2,
        )
        .await;
    }

    #[tokio::test]
    async fn empty_body_is_400() {
        let err = expect_bad_row(invocation(Some(CSV), None, ""), 1).await;
        assert!(err.contains("empty body"), "{err}");
        expect_bad_row(invocation(Some(CSV), None, "\n\n"), 1).await;
        expect_bad_row(invocation(Some(JSON), None, ""), 1).await;
        expect_bad_row(invocation(Some(JSON), None, r#"{"instances": []}"#), 1).await;
    }

    #[tokio::test]
    async fn json_bad_rows_are_400_with_instance_number() {
        let err = expect_bad_row(
            invocation(Some(JSON), None, "[[5.1,3.5,1.4,0.2],[1,2,3]]"),
            2,
        )
        .await;
        assert!(err.contains("expected 4 values, got 3"), "{err}");
        let err = expect_bad_row(invocation(Some(JSON), None, r#"[[5.1,"x",1.4,0.2]]"#), 1).await;
        assert!(err.contains("not a finite number"), "{err}");
        expect_bad_row(invocation(Some(JSON), None, r#"{"rows": [[1,2,3,4]]}"#), 1).await;
        expect_bad_row(invocation(Some(JSON), None, "[1,2,3,4]"), 1).await;
    }

    #[tokio::test]
    async fn json_syntax_error_is_400_with_text_line() {
        let err = expect_bad_row(
            invocation(Some(JSON), None, "[\n[1,2,3,4],\n[NaN,1,2,3]]"),
            3,
        )
        .await;
        assert!(err.contains("invalid JSON"), "{err}");
    }

    #[tokio::test]
    async fn body_over_6_mb_is_413() {
        let row = "5.1,3.5,1.4,0.2\n";
        let body = row.repeat(MAX_PAYLOAD_BYTES / row.len() + 1);
        assert!(body.len() > MAX_PAYLOAD_BYTES);
        let (status, headers, text) = send(app(), invocation(Some(CSV), None, body)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
        assert_eq!(content_type(&headers), JSON);
    }

    #[tokio::test]
    async fn body_just_under_6_mb_is_accepted() {
        let row = "5.1,3.5,1.4,0.2\n";
        let body = row.repeat(MAX_PAYLOAD_BYTES / row.len());
        let (status, _, text) = send(app(), invocation(Some(CSV), None, body)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text.lines().count(), MAX_PAYLOAD_BYTES / row.len());
    }

    #[tokio::test]
    async fn custom_attributes_are_echoed_with_the_units_on_success_and_unchanged_on_error() {
        let rows = CSV_ROWS.lines().count();
        for (ct, status, echoed) in [
            (
                CSV,
                StatusCode::OK,
                format!("trace=abc, tenant=42, sealbox-consumed-units={rows}"),
            ),
            (
                "text/plain",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "trace=abc, tenant=42".to_owned(),
            ),
        ] {
            let mut req = invocation(Some(ct), None, CSV_ROWS);
            req.headers_mut().insert(
                CUSTOM_ATTRIBUTES_HEADER,
                HeaderValue::from_static("trace=abc, tenant=42"),
            );
            let (got, headers, _) = send(app(), req).await;
            assert_eq!(got, status);
            assert_eq!(
                headers.get("X-Amzn-SageMaker-Custom-Attributes").unwrap(),
                echoed.as_str()
            );
        }
    }

    #[tokio::test]
    async fn custom_attributes_carry_only_the_units_when_none_were_sent_and_none_on_error() {
        let (_, headers, _) = send(app(), invocation(Some(CSV), None, CSV_ROWS)).await;
        let rows = CSV_ROWS.lines().count();
        assert_eq!(
            headers.get(CUSTOM_ATTRIBUTES_HEADER).unwrap(),
            format!("sealbox-consumed-units={rows}").as_str()
        );
        let (_, headers, _) = send(app(), invocation(Some("text/plain"), None, CSV_ROWS)).await;
        assert!(headers.get(CUSTOM_ATTRIBUTES_HEADER).is_none());
    }

    #[tokio::test]
    async fn custom_attributes_at_the_limit_are_echoed_unchanged() {
        let full = "a".repeat(MAX_CUSTOM_ATTRIBUTES);
        let mut req = invocation(Some(CSV), None, CSV_ROWS);
        req.headers_mut().insert(
            CUSTOM_ATTRIBUTES_HEADER,
            HeaderValue::try_from(full.as_str()).unwrap(),
        );
        let (_, headers, _) = send(app(), req).await;
        assert_eq!(
            headers.get(CUSTOM_ATTRIBUTES_HEADER).unwrap(),
            full.as_str()
        );
    }

    #[tokio::test]
    async fn every_success_meters_the_rows_it_scored_and_errors_meter_nothing() {
        let json_rows = r#"{"instances": [[5.1,3.5,1.4,0.2],[6.7,3.0,5.2,2.3],[5.9,3.0,5.1,1.8]]}"#;
        for (ct, body, rows) in [
            (CSV, CSV_ROWS, CSV_ROWS.lines().count()),
            (JSON, json_rows, 3),
        ] {
            let (status, headers, _) = send(app(), invocation(Some(ct), None, body)).await;
            assert_eq!(status, StatusCode::OK);
            let metering: Value =
                serde_json::from_slice(headers.get(METERING_HEADER).unwrap().as_bytes()).unwrap();
            assert_eq!(
                metering,
                serde_json::json!({"Dimension": "inference.count", "ConsumedUnits": rows})
            );
        }
        let (status, headers, _) = send(app(), invocation(Some(CSV), None, "1,2\n")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(headers.get(METERING_HEADER).is_none());
    }

    #[tokio::test]
    async fn internal_error_renders_500_json() {
        let resp = ApiError::internal("boom".to_owned()).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "boom");
        assert!(v.get("line").is_none());
    }

    #[tokio::test]
    async fn configured_latency_delays_each_invocation() {
        let app = router(
            model(),
            ModelConfig::with_latency(Duration::from_millis(50)),
        );
        let start = std::time::Instant::now();
        let (status, _, _) = send(app, invocation(Some(CSV), None, CSV_ROWS)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn get_on_invocations_is_405() {
        let req = Request::get("/invocations").body(Body::empty()).unwrap();
        let (status, _, _) = send(app(), req).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }
}
