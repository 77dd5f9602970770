//! Prometheus metrics of the proxy, served on /metrics.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the proxy exports.
pub struct Metrics {
    pub registry: Registry,
    pub connections_total: IntCounter,
    pub connections_refused: IntCounter,
    pub connections_current: IntGauge,
    pub queries_total: IntCounterVec,
    /// `queries_total{kind="route"}`, resolved once (hot path).
    pub queries_route: IntCounter,
    /// `queries_total{kind="session"}`.
    pub queries_session: IntCounter,
    pub query_errors_total: IntCounterVec,
    /// Statement latency by keyspace and plan type.
    pub query_duration_seconds: HistogramVec,
    /// Per-shard latency of what the proxy sent.
    pub backend_query_duration_seconds: HistogramVec,
    pub build_info: IntGaugeVec,
    pub fenced: IntGauge,
    pub plan_cache_hits: IntCounter,
    pub plan_cache_misses: IntCounter,
    pub topology_revision: IntGauge,
    pub topology_updates_total: IntCounter,
    pub topology_rejected_total: IntCounter,
    pub topology_etcd_errors_total: IntCounter,
    pub topology_stale: IntGauge,
    pub backend_connect_errors_total: IntCounter,
    /// Writes held by a resharding cutover's write buffer.
    pub writes_buffered_total: IntCounter,
    /// The longest a write was held by a cutover.
    pub write_buffer_max_seconds: prometheus::Gauge,
    /// Commands that panicked (each closed its connection, nothing else).
    pub session_panics_total: IntCounter,
    /// Schema snapshots swapped in, and failed schema reads.
    pub schema_refreshes_total: IntCounter,
    pub schema_errors_total: IntCounter,
    /// Statements answered by gathering rows on a scratch connection, and what they read.
    pub gathered_total: IntCounter,
    pub gathered_rows_total: IntCounter,
    pub gathered_bytes_total: IntCounter,
    /// Sessions rolled back and closed after idling in a transaction.
    pub idle_transactions_killed_total: IntCounter,
    /// Transactions rolled back to break a lock-wait cycle across shards.
    pub deadlocks_broken_total: IntCounter,
    /// Successful client logins by auth plugin and path (scramble, fast, full_tls,
    /// full_rsa).
    pub auth_total: IntCounterVec,
    /// Client logins refused with access denied.
    pub auth_failures_total: IntCounter,
    /// Client connections that negotiated TLS.
    pub tls_connections_total: IntCounter,
    /// Certificate reloads (SIGHUP) by result (ok, error).
    pub tls_reloads_total: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("shardgate".into()), None).expect("registry");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
                labels,
            )
            .expect("metric");
            registry.register(Box::new(h.clone())).expect("register");
            h
        };
        #[cfg(target_os = "linux")]
        {
            // RSS, CPU seconds, open and max file descriptors, start time.
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(pc));
        }
        let vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let queries_total = vec(
            "queries_total",
            "Statements executed, by plan kind.",
            &["kind"],
        );
        Metrics {
            queries_route: queries_total.with_label_values(&["route"]),
            queries_session: queries_total.with_label_values(&["session"]),
            queries_total,
            connections_total: counter("connections_total", "Client connections accepted."),
            connections_refused: counter(
                "connections_refused_total",
                "Client connections refused (limit or shutdown).",
            ),
            connections_current: gauge("connections_current", "Client connections open now."),
            auth_total: vec(
                "auth_total",
                "Successful client logins, by auth plugin and path (scramble: mysql_native_password; fast: caching_sha2_password from the cache; full_tls / full_rsa: caching_sha2_password full authentication over TLS / with the RSA key).",
                &["plugin", "path"],
            ),
            auth_failures_total: counter(
                "auth_failures_total",
                "Client logins refused with access denied (1045).",
            ),
            tls_connections_total: counter(
                "tls_connections_total",
                "Client connections that logged in over TLS.",
            ),
            tls_reloads_total: vec(
                "tls_reloads_total",
                "TLS certificate reloads on SIGHUP, by result (ok, error).",
                &["result"],
            ),
            query_errors_total: vec(
                "query_errors_total",
                "Statements that returned an error, by errno and origin (client: the statement or a value was wrong; proxy: refused or failed in the proxy; backend: a MySQL server's error).",
                &["code", "origin"],
            ),
            query_duration_seconds: histogram(
                "query_duration_seconds",
                "Time from a statement's arrival to its last packet, by keyspace and plan type (route, scatter, merge, union, insert, write, join, ... and session).",
                &["keyspace", "plan"],
            ),
            backend_query_duration_seconds: histogram(
                "backend_query_duration_seconds",
                "Time from sending a statement to a shard to reading its whole answer, by keyspace and shard.",
                &["keyspace", "shard"],
            ),
            build_info: {
                let g = IntGaugeVec::new(
                    Opts::new("build_info", "Always 1; the labels say which build runs."),
                    &["version"],
                )
                .expect("metric");
                registry.register(Box::new(g.clone())).expect("register");
                g.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
                g
            },
            fenced: gauge(
                "fenced",
                "1 while this proxy's etcd registration is lost and writes to keyspaces under a workflow are held (fencing).",
            ),
            plan_cache_hits: counter("plan_cache_hits_total", "Plans served from the cache."),
            plan_cache_misses: counter("plan_cache_misses_total", "Statements planned anew."),
            topology_revision: gauge("topology_revision", "etcd revision of the topology in use."),
            topology_updates_total: counter(
                "topology_updates_total",
                "Topology snapshots swapped in.",
            ),
            topology_rejected_total: counter(
                "topology_rejected_total",
                "Topology changes rejected as invalid.",
            ),
            topology_etcd_errors_total: counter(
                "topology_etcd_errors_total",
                "Failed etcd reads or watches.",
            ),
            topology_stale: gauge(
                "topology_stale",
                "1 while etcd is unreachable and the last good snapshot is served.",
            ),
            backend_connect_errors_total: counter(
                "backend_connect_errors_total",
                "Failed backend connection attempts.",
            ),
            writes_buffered_total: counter(
                "writes_buffered_total",
                "Writes held by a resharding cutover's write buffer.",
            ),
            write_buffer_max_seconds: {
                let g = prometheus::Gauge::new(
                    "write_buffer_max_seconds",
                    "The longest a write was held by a resharding cutover.",
                )
                .expect("metric");
                registry.register(Box::new(g.clone())).expect("register");
                g
            },
            session_panics_total: counter(
                "session_panics_total",
                "Commands that hit a bug in the proxy; each closed only its own connection.",
            ),
            schema_refreshes_total: counter(
                "schema_refreshes_total",
                "Schema snapshots swapped in after a change was read.",
            ),
            schema_errors_total: counter(
                "schema_errors_total",
                "Keyspace schema reads that failed (the last known schema is kept).",
            ),
            gathered_total: counter(
                "gathered_total",
                "Statements the shards could not answer alone, answered by gathering rows on a scratch connection.",
            ),
            gathered_rows_total: counter(
                "gathered_rows_total",
                "Rows read from the shards into scratch tables.",
            ),
            idle_transactions_killed_total: counter(
                "idle_transactions_killed_total",
                "Sessions idle inside a transaction past session.idle_transaction_timeout_s, rolled back and closed.",
            ),
            deadlocks_broken_total: counter(
                "deadlocks_broken_total",
                "Transactions this proxy rolled back (error 1213) to break a lock-wait cycle across shards.",
            ),
            gathered_bytes_total: counter(
                "gathered_bytes_total",
                "Bytes of rows (as SQL literals) written into scratch tables.",
            ),
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
