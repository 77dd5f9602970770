//! OpenTelemetry trace export (`[tracing]`, off unless `tracing.otlp_endpoint` is set).
//!
//! Every statement that runs against shards already gets a query-log [`Entry`]; when export
//! is on, a sampled entry also becomes spans, built after the fact with explicit times:
//!
//! - one span per statement, named by its plan kind (`route`, `scatter`, `merge`, ...),
//!   kind server, from (finish - total time) to finish, with the attributes
//!   `db.system` = `mysql`, `db.statement` (the digest: literals already replaced by `?`),
//!   `db.name` (keyspace), `db.user`, `shardgate.trace_id` (the same id as the query log's,
//!   [`Entry::trace_id`]), `shardgate.plan`, `shardgate.rows` and, when it failed,
//!   `shardgate.errno` with the span status set to error;
//! - one child span per shard it touched, named by the shard label (`keyspace/shard`), kind
//!   client, placed by the shard's start offset and time ([`ShardTime`]), with
//!   `db.system`, `shardgate.shard` and `shardgate.rows`.
//!
//! Statements are sampled by trace number (`tracing.sample_ratio` of them, evenly spread).
//! A statement carrying a sqlcommenter-style W3C trace context
//! (`/*traceparent='00-<32 hex>-<16 hex>-01'*/`, near its start or end) joins that trace as
//! a child of the application's span, and follows its sampled flag instead.
//!
//! Spans go to the SDK's batch span processor, which queues them (dropping when its queue is
//! full) and exports them over OTLP/gRPC from a background thread every
//! `tracing.export_interval_ms`: a statement never waits for the network. With no endpoint
//! nothing here exists and the only cost on the request path is one boolean
//! ([`Context::traces_wanted`](crate::context::Context::traces_wanted)).
//!
//! [`ShardTime`]: crate::querylog::ShardTime

use crate::querylog::{Entry, QueryLog};
use opentelemetry::trace::{
    Span, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider,
};
use opentelemetry::{KeyValue, StringValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use shardgate_config::TracingConfig;
use std::time::{Duration, SystemTime};

/// The tracer of one proxy (present only when `tracing.otlp_endpoint` is set).
pub struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    ratio: f64,
}

impl Otel {
    /// The exporter `c` asks for, or None when export is off. Call it inside a Tokio
    /// runtime: the gRPC channel starts its worker there (it connects lazily, so a
    /// collector that is down only loses spans).
    pub fn new(c: &TracingConfig) -> Result<Option<Otel>, String> {
        if c.otlp_endpoint.is_empty() {
            return Ok(None);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("OpenTelemetry export must be started inside a Tokio runtime".into());
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(c.otlp_endpoint.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(c.export_interval_ms.max(1)))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build(),
            )
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(
                Resource::builder()
                    .with_service_name(c.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Some(Otel::with_provider(provider, c.sample_ratio)))
    }

    /// Spans go to `provider` (tests give one with an exporter of their own).
    pub fn with_provider(provider: SdkTracerProvider, ratio: f64) -> Otel {
        Otel {
            tracer: provider.tracer("shardgate"),
            provider,
            ratio,
        }
    }

    /// Whether statement number `trace` is exported: exactly `ratio` of any run of
    /// consecutive numbers, evenly spread.
    pub fn sampled(&self, trace: u64) -> bool {
        if self.ratio >= 1.0 {
            return true;
        }
        let at = |n: u64| (n as f64 * self.ratio).floor();
        at(trace) != at(trace.saturating_sub(1))
    }

    /// Turns a finished statement into spans (when sampled). `sql` is the text the client
    /// sent, read only for a `traceparent` comment. Never waits: the batch processor
    /// queues the spans.
    pub fn export(&self, e: &Entry, log: &QueryLog, sql: &str) {
        let parent = traceparent(sql);
        let wanted = match &parent {
            Some(p) => p.is_sampled(),
            None => self.sampled(e.trace),
        };
        if !wanted {
            return;
        }
        let end = SystemTime::now();
        let start = end.checked_sub(millis(e.ms)).unwrap_or(end);
        let mut attributes = vec![
            KeyValue::new("db.system", "mysql"),
            KeyValue::new("db.statement", StringValue::from(e.sql.clone())),
            KeyValue::new("db.name", StringValue::from(e.keyspace.clone())),
            KeyValue::new("db.user", StringValue::from(e.user.clone())),
            KeyValue::new("shardgate.trace_id", e.trace_id(log)),
            KeyValue::new("shardgate.plan", e.plan),
            KeyValue::new("shardgate.rows", e.rows as i64),
        ];
        let mut statement = self
            .tracer
            .span_builder(e.plan)
            .with_kind(SpanKind::Server)
            .with_start_time(start);
        if let Some(code) = e.error {
            attributes.push(KeyValue::new("shardgate.errno", code as i64));
            statement = statement.with_status(Status::error(format!("MySQL error {code}")));
        }
        let parent_cx = match parent {
            Some(p) => opentelemetry::Context::new().with_remote_span_context(p),
            None => opentelemetry::Context::new(),
        };
        let span = self
            .tracer
            .build_with_context(statement.with_attributes(attributes), &parent_cx);
        let cx = parent_cx.with_span(span);
        for s in &e.shards {
            let from = (start + millis(s.start_ms)).min(end);
            let to = (from + millis(s.ms)).min(end);
            let child = self
                .tracer
                .span_builder(s.shard.to_string())
                .with_kind(SpanKind::Client)
                .with_start_time(from)
                .with_attributes([
                    KeyValue::new("db.system", "mysql"),
                    KeyValue::new("shardgate.shard", StringValue::from(s.shard.clone())),
                    KeyValue::new("shardgate.rows", s.rows as i64),
                ]);
            self.tracer
                .build_with_context(child, &cx)
                .end_with_timestamp(to);
        }
        cx.span().end_with_timestamp(end);
    }

    /// The provider (cheap to clone), for [`shutdown`] at exit.
    pub fn provider(&self) -> SdkTracerProvider {
        self.provider.clone()
    }
}

/// Exports what is queued and stops the exporter, waiting up to `timeout` for the
/// collector. Exporting needs the runtime's other threads, so this runs on a blocking one.
pub async fn shutdown(provider: SdkTracerProvider, timeout: Duration) {
    let done = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
    match done {
        Ok(Ok(())) => tracing::info!("OpenTelemetry spans flushed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "OpenTelemetry export did not shut down cleanly"),
        Err(e) => tracing::warn!(error = %e, "OpenTelemetry shutdown failed"),
    }
}

fn millis(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default()
}

/// Bytes of the statement's start and of its end searched for a `traceparent` comment
/// (sqlcommenter appends it; some libraries prepend): a bulk INSERT is not read whole.
const TRACEPARENT_WINDOW: usize = 1024;

/// The W3C trace context of a sqlcommenter-style comment in `sql`
/// (`/*...traceparent='00-<32 hex trace id>-<16 hex span id>-<2 hex flags>'...*/`), if any.
pub fn traceparent(sql: &str) -> Option<SpanContext> {
    let b = sql.as_bytes();
    let head = &b[..b.len().min(TRACEPARENT_WINDOW)];
    let tail_from = b.len().saturating_sub(TRACEPARENT_WINDOW).max(head.len());
    let tail = &b[tail_from..];
    find_in(head).or_else(|| find_in(tail))
}

fn find_in(b: &[u8]) -> Option<SpanContext> {
    const KEY: &[u8] = b"traceparent='";
    let at = b.windows(KEY.len()).rposition(|w| w == KEY)?;
    // Inside a comment: the last `/*` before it is not closed yet.
    let before = &b[..at];
    let open = before.windows(2).rposition(|w| w == b"/*")?;
    if before[open..].windows(2).any(|w| w == b"*/") {
        return None;
    }
    let value = &b[at + KEY.len()..];
    let value = std::str::from_utf8(&value[..value.iter().position(|c| *c == b'\'')?]).ok()?;
    parse_traceparent(value)
}

/// Parses `version-traceid-spanid-flags` (W3C Trace Context, version 00 layout).
fn parse_traceparent(v: &str) -> Option<SpanContext> {
    let mut parts = v.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|c| c.is_ascii_hexdigit());
    if !hex(version, 2)
        || version.eq_ignore_ascii_case("ff")
        || (version == "00" && parts.next().is_some())
    {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let span = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        TraceId::from_bytes(trace.to_be_bytes()),
        SpanId::from_bytes(span.to_be_bytes()),
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests;
