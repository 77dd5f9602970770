use super::*;
use crate::querylog::ShardTime;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::sync::{Arc, Mutex};

/// Keeps what it is given.
#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    }
}

fn otel(ratio: f64) -> (Otel, Collect) {
    let c = Collect::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(c.clone())
        .build();
    (Otel::with_provider(provider, ratio), c)
}

fn entry(trace: u64, error: Option<u16>) -> Entry {
    let shard = |name: &str, start_ms: f64, ms: f64| ShardTime {
        shard: Arc::from(name),
        rows: 2,
        start_ms,
        ms,
    };
    Entry {
        time_ms: 0,
        trace,
        session: 1,
        user: "app".into(),
        keyspace: "customer".into(),
        sql: "SELECT name FROM customer".into(),
        plan: "scatter",
        shards: vec![
            shard("customer/-80", 1.0, 3.0),
            shard("customer/80-", 1.0, 5.0),
        ],
        ms: 8.0,
        rows: 4,
        error,
    }
}

fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a opentelemetry::Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

#[test]
fn no_endpoint_no_tracer() {
    let c = TracingConfig::default();
    assert!(c.otlp_endpoint.is_empty());
    assert!(Otel::new(&c).unwrap().is_none());
    // Even outside a runtime: nothing is started.
    let ctx = crate::context::Context::new(
        shardgate_config::Config {
            log: shardgate_config::LogConfig {
                query_log_entries: 0,
                ..Default::default()
            },
            ..Default::default()
        },
        Default::default(),
        None,
    );
    assert!(ctx.otel.is_none());
    assert!(!ctx.traces_wanted(), "query log and export both off");
}

#[test]
fn a_statement_becomes_a_span_with_a_child_per_shard() {
    let (o, c) = otel(1.0);
    let log = QueryLog::new(0, 0, "p".into());
    let e = entry(7, None);
    o.export(&e, &log, "SELECT name FROM customer");
    let spans = c.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 3, "{spans:?}");
    let stmt = spans.iter().find(|s| s.name == "scatter").unwrap();
    assert_eq!(stmt.parent_span_id, SpanId::INVALID);
    assert_eq!(stmt.span_kind, SpanKind::Server);
    assert_eq!(
        attr(stmt, "db.statement").unwrap().as_str(),
        "SELECT name FROM customer"
    );
    assert_eq!(attr(stmt, "db.system").unwrap().as_str(), "mysql");
    assert_eq!(attr(stmt, "db.name").unwrap().as_str(), "customer");
    assert_eq!(attr(stmt, "db.user").unwrap().as_str(), "app");
    assert_eq!(
        attr(stmt, "shardgate.trace_id").unwrap().as_str(),
        e.trace_id(&log).as_str()
    );
    assert_eq!(
        attr(stmt, "shardgate.rows"),
        Some(&opentelemetry::Value::I64(4))
    );
    assert!(attr(stmt, "shardgate.errno").is_none());
    assert_eq!(stmt.status, Status::Unset);
    let took = stmt.end_time.duration_since(stmt.start_time).unwrap();
    assert!((took.as_secs_f64() * 1000.0 - 8.0).abs() < 0.01, "{took:?}");
    for (name, ms) in [("customer/-80", 3.0), ("customer/80-", 5.0)] {
        let s = spans.iter().find(|s| s.name == name).unwrap();
        assert_eq!(s.parent_span_id, stmt.span_context.span_id());
        assert_eq!(s.span_context.trace_id(), stmt.span_context.trace_id());
        assert_eq!(s.span_kind, SpanKind::Client);
        assert_eq!(attr(s, "shardgate.shard").unwrap().as_str(), name);
        let offset = s.start_time.duration_since(stmt.start_time).unwrap();
        assert!((offset.as_secs_f64() * 1000.0 - 1.0).abs() < 0.01);
        let took = s.end_time.duration_since(s.start_time).unwrap();
        assert!((took.as_secs_f64() * 1000.0 - ms).abs() < 0.01);
        assert!(s.end_time <= stmt.end_time);
    }
}

#[test]
fn errors_set_the_status_and_the_code() {
    let (o, c) = otel(1.0);
    let log = QueryLog::new(0, 0, "p".into());
    o.export(&entry(1, Some(1062)), &log, "INSERT ...");
    let spans = c.0.lock().unwrap().clone();
    let stmt = spans.iter().find(|s| s.name == "scatter").unwrap();
    assert!(
        matches!(stmt.status, Status::Error { .. }),
        "{:?}",
        stmt.status
    );
    assert_eq!(
        attr(stmt, "shardgate.errno"),
        Some(&opentelemetry::Value::I64(1062))
    );
}

#[test]
fn sampling_by_trace_number_is_even() {
    let (o, _) = otel(0.25);
    assert_eq!((1..=100).filter(|t| o.sampled(*t)).count(), 25);
    assert_eq!((1..=8).filter(|t| o.sampled(*t)).count(), 2);
    let (none, c) = otel(0.0);
    assert!(!(1..=100).any(|t| none.sampled(t)));
    none.export(&entry(3, None), &QueryLog::new(0, 0, "p".into()), "");
    assert!(c.0.lock().unwrap().is_empty());
    let (all, _) = otel(1.0);
    assert!((1..=100).all(|t| all.sampled(t)));
}

#[test]
fn a_traceparent_comment_joins_the_applications_trace() {
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let span = "00f067aa0ba902b7";
    let sql = format!("SELECT 1 /*action='list',traceparent='00-{trace}-{span}-01'*/");
    let p = traceparent(&sql).unwrap();
    assert_eq!(format!("{}", p.trace_id()), trace);
    assert_eq!(format!("{}", p.span_id()), span);
    assert!(p.is_sampled() && p.is_remote());
    // Leading comments count too; not-sampled is kept as such.
    let p = traceparent(&format!("/*traceparent='00-{trace}-{span}-00'*/ SELECT 1")).unwrap();
    assert!(!p.is_sampled());
    for bad in [
        format!("SELECT 'traceparent=''00-{trace}-{span}-01'''"),
        format!("SELECT 1 /* x */ traceparent='00-{trace}-{span}-01'"),
        format!("SELECT 1 /*traceparent='00-{trace}-{span}'*/"),
        format!("SELECT 1 /*traceparent='00-{}-{span}-01'*/", "0".repeat(32)),
        format!("SELECT 1 /*traceparent='ff-{trace}-{span}-01'*/"),
        format!("SELECT 1 /*traceparent='00-{trace}-{span}-01-x'*/"),
        "SELECT 1".to_string(),
    ] {
        assert!(traceparent(&bad).is_none(), "{bad}");
    }
    // The middle of a long statement is not read.
    let long = format!(
        "INSERT INTO t VALUES {} /*traceparent='00-{trace}-{span}-01'*/ {}",
        "(1),".repeat(500),
        "-- ".repeat(500)
    );
    assert!(traceparent(&long).is_none());

    let (o, c) = otel(0.0);
    let log = QueryLog::new(0, 0, "p".into());
    o.export(&entry(1, None), &log, &sql);
    let spans = c.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 3, "a sampled parent wins over the ratio");
    let stmt = spans.iter().find(|s| s.name == "scatter").unwrap();
    assert_eq!(format!("{}", stmt.span_context.trace_id()), trace);
    assert_eq!(format!("{}", stmt.parent_span_id), span);
    o.export(&entry(2, None), &log, &sql.replace("-01'", "-00'"));
    assert_eq!(
        c.0.lock().unwrap().len(),
        3,
        "an unsampled parent is followed"
    );
}
