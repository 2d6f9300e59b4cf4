//! A `Snapshot` in the Prometheus text exposition format (version 0.0.4),
//! the body of `GET /metrics`.
//!
//! Owns metric names, help texts and label names; the list is documented in
//! the README's "Operating roomcast" section and must stay in step with it.

use std::fmt::Write;

use crate::hooks::HookError;
use crate::metrics::{
    API_UNKNOWN_METHOD, ApiMethodSnapshot, HistogramSnapshot, HookSnapshot, ShardSnapshot, Snapshot,
};

/// The `Content-Type` of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric; `uptime_seconds` and `version` come from the caller.
pub fn render(snap: &Snapshot, uptime_seconds: f64, version: &str) -> String {
    // The Server API's series are most of it.
    let mut out = String::with_capacity(32 * 1024);
    let w = &mut out;
    gauge(
        w,
        "roomcast_connections",
        "Open WebSocket connections.",
        snap.connections,
    );
    gauge(
        w,
        "roomcast_users",
        "Distinct users with an open /ws connection.",
        snap.users,
    );
    gauge(
        w,
        "roomcast_rooms",
        "Rooms with members or retained history.",
        snap.rooms,
    );
    counter(
        w,
        "roomcast_connections_opened_total",
        "WebSocket connections opened.",
        snap.opened,
    );
    header(
        w,
        "roomcast_connections_closed_total",
        "WebSocket connections closed, by close code (1006: aborted without a close handshake).",
        "counter",
    );
    for &(code, count) in &snap.closed {
        let code = code_label(code);
        let _ = writeln!(
            w,
            "roomcast_connections_closed_total{{code=\"{code}\"}} {count}"
        );
    }
    counter(
        w,
        "roomcast_messages_received_total",
        "WebSocket data messages received.",
        snap.messages_in,
    );
    counter(
        w,
        "roomcast_messages_sent_total",
        "WebSocket data messages queued for clients.",
        snap.messages_out,
    );
    counter(
        w,
        "roomcast_bytes_received_total",
        "Bytes read from client sockets.",
        snap.bytes_in,
    );
    counter(
        w,
        "roomcast_bytes_sent_total",
        "Bytes written to client sockets.",
        snap.bytes_out,
    );
    counter(
        w,
        "roomcast_publishes_total",
        "Room events sequenced (from WebSocket clients and POST /publish).",
        snap.publishes,
    );
    counter(
        w,
        "roomcast_deliveries_total",
        "Room events queued for a member.",
        snap.deliveries,
    );
    counter(
        w,
        "roomcast_deliveries_dropped_total",
        "Room events dropped for slow consumers (--slow-consumer drop).",
        snap.dropped,
    );
    counter(
        w,
        "roomcast_deliveries_conflated_total",
        "Room events replaced by a newer one for slow consumers (--slow-consumer conflate).",
        snap.conflated,
    );
    counter(
        w,
        "roomcast_volatile_total",
        "Volatile room events published (no seq, no history).",
        snap.volatile,
    );
    counter(
        w,
        "roomcast_volatile_dropped_total",
        "Volatile room events not sent to a member whose queue was above half its bound.",
        snap.volatile_dropped,
    );
    counter(
        w,
        "roomcast_slow_consumer_closes_total",
        "Connections closed with 4008 for falling behind.",
        snap.slow_consumer_closes,
    );
    counter(
        w,
        "roomcast_rate_limited_total",
        "Messages refused by the per-connection rate limit.",
        snap.rate_limited,
    );
    header(
        w,
        "roomcast_handshake_rejections_total",
        "WebSocket upgrades refused, by error code.",
        "counter",
    );
    for &(code, count) in &snap.handshake_rejections {
        let _ = writeln!(
            w,
            "roomcast_handshake_rejections_total{{reason=\"{code}\"}} {count}"
        );
    }
    counter(
        w,
        "roomcast_tls_handshakes_total",
        "TLS handshakes completed.",
        snap.tls_handshakes,
    );
    header(
        w,
        "roomcast_tls_handshake_failures_total",
        "TLS handshakes that did not complete, by reason.",
        "counter",
    );
    for &(failure, count) in &snap.tls_failures {
        let reason = failure.as_str();
        let _ = writeln!(
            w,
            "roomcast_tls_handshake_failures_total{{reason=\"{reason}\"}} {count}"
        );
    }
    counter(
        w,
        "roomcast_ping_timeouts_total",
        "Connections aborted for not answering a ping in time.",
        snap.ping_timeouts,
    );
    gauge(
        w,
        "roomcast_pre_request_connections",
        "Sockets accepted that have not sent a complete request head yet.",
        snap.pre_request,
    );
    counter(
        w,
        "roomcast_pre_request_evicted_total",
        "Sockets closed before their first request to make room for newer ones.",
        snap.pre_request_evicted,
    );
    gauge(
        w,
        "roomcast_write_buffer_bytes",
        "Output queued in user space for all connections (sampled once per sweep).",
        snap.write_buffer_bytes,
    );
    histogram(
        w,
        "roomcast_handshake_duration_seconds",
        "From accepting a socket to queuing its 101 Switching Protocols.",
        &snap.handshake_latency,
    );
    histogram(
        w,
        "roomcast_fanout_duration_seconds",
        "From reading a publish to queuing it for the last member, observed once per shard with members.",
        &snap.fanout_latency,
    );
    api(w, &snap.api);
    per_shard(
        w,
        "roomcast_shard_connections",
        "Open WebSocket connections per shard.",
        "gauge",
        &snap.shards,
        |s| s.connections,
    );
    per_shard(
        w,
        "roomcast_shard_inbox",
        "Batches of room traffic (and handed-off sockets) waiting in the shard's inbox, sampled each sweep.",
        "gauge",
        &snap.shards,
        |s| s.inbox,
    );
    per_shard(
        w,
        "roomcast_shard_read_pauses_total",
        "Times the shard stopped reading client sockets because another shard was too far behind on its room traffic.",
        "counter",
        &snap.shards,
        |s| s.read_pauses,
    );
    per_shard(
        w,
        "roomcast_shard_busy_ratio",
        "Share of the last sweep interval (at most a second) the shard's thread was on a CPU.",
        "gauge",
        &snap.shards,
        |s| s.busy_ratio,
    );
    per_shard(
        w,
        "roomcast_shard_busy_seconds_total",
        "CPU time (user and system) the shard's thread has used.",
        "counter",
        &snap.shards,
        |s| s.busy_seconds,
    );
    if let Some(redis) = &snap.redis {
        gauge(
            w,
            "roomcast_redis_up",
            "1 while every Redis server of the cluster is reachable, else 0.",
            u64::from(redis.up),
        );
        counter(
            w,
            "roomcast_redis_reconnects_total",
            "Connections to a Redis server made again after one was lost.",
            redis.reconnects,
        );
        counter(
            w,
            "roomcast_redis_master_changes_total",
            "Times a Sentinel named a new master for a redis+sentinel:// server.",
            redis.master_changes,
        );
        counter(
            w,
            "roomcast_redis_timeouts_total",
            "Redis links dropped for answering nothing within --redis-timeout.",
            redis.timeouts,
        );
        counter(
            w,
            "roomcast_redis_cluster_redirects_total",
            "Redis Cluster: commands sent again after a MOVED or ASK redirection.",
            redis.cluster_redirects,
        );
        counter(
            w,
            "roomcast_redis_cluster_maps_refused_total",
            "Redis Cluster: slot maps refused as out of shape or bounds (the last one stands).",
            redis.cluster_maps_refused,
        );
        gauge(
            w,
            "roomcast_redis_pipeline_depth",
            "Redis commands sent and not yet answered, over all servers.",
            redis.in_flight,
        );
        histogram(
            w,
            "roomcast_redis_command_duration_seconds",
            "From queuing a publish or history call for Redis to reading its reply.",
            &redis.command_latency,
        );
    }
    if let Some(hooks) = &snap.hooks {
        hook_series(w, hooks);
    }
    header(
        w,
        "roomcast_uptime_seconds",
        "Seconds since the server started.",
        "gauge",
    );
    let _ = writeln!(w, "roomcast_uptime_seconds {uptime_seconds}");
    header(
        w,
        "roomcast_build_info",
        "The running version; always 1.",
        "gauge",
    );
    let _ = writeln!(w, "roomcast_build_info{{version=\"{version}\"}} 1");
    out
}

/// Every method and status, zeros included: the set of series is fixed
/// (`API_METHODS` by the statuses counted, one histogram per method, about
/// 20 KiB of text) rather than growing with traffic, and a series present from the start lets `rate()` and
/// `increase()` see a method's first call. The unknown method's histogram
/// is left out: such calls are refused before a body, never timed.
fn api(w: &mut String, methods: &[ApiMethodSnapshot]) {
    const REQUESTS: &str = "roomcast_api_requests_total";
    header(
        w,
        REQUESTS,
        "Server API calls answered, by method (unknown: a path naming none) and HTTP status (other: any status not listed).",
        "counter",
    );
    for m in methods {
        for &(status, count) in &m.calls {
            let method = m.method;
            let status = code_label(status);
            let _ = writeln!(
                w,
                "{REQUESTS}{{method=\"{method}\",status=\"{status}\"}} {count}"
            );
        }
    }
    const DURATION: &str = "roomcast_api_request_duration_seconds";
    header(
        w,
        DURATION,
        "From reading a Server API call's body to queuing its response, by method.",
        "histogram",
    );
    for m in methods.iter().filter(|m| m.method != API_UNKNOWN_METHOD) {
        histogram_series(
            w,
            DURATION,
            &format!("method=\"{}\",", m.method),
            &m.latency,
        );
    }
}

/// A counted close code or HTTP status, `0` being the slot of all others.
fn code_label(code: u16) -> String {
    if code == 0 {
        "other".to_owned()
    } else {
        code.to_string()
    }
}

/// The hooks client's series (any hook URL given).
fn hook_series(w: &mut String, hooks: &HookSnapshot) {
    counter(
        w,
        "roomcast_hook_requests_total",
        "Hook requests the hooks thread took (webhooks and proxies).",
        hooks.requests,
    );
    counter(
        w,
        "roomcast_hook_responses_total",
        "Complete responses from hook backends, whatever their status.",
        hooks.responses,
    );
    counter(
        w,
        "roomcast_hook_non_2xx_total",
        "Complete responses from hook backends with a status outside 2xx.",
        hooks.non_2xx,
    );
    let name = "roomcast_hook_failures_total";
    header(
        w,
        name,
        "Hook requests that got no response, by reason.",
        "counter",
    );
    for (reason, count) in HookError::REASONS.iter().zip(&hooks.failures) {
        let _ = writeln!(w, "{name}{{reason=\"{reason}\"}} {count}");
    }
    counter(
        w,
        "roomcast_hook_unreadable_answers_total",
        "Proxy answers that were complete but unreadable (non-2xx, not JSON, a bad shape or code).",
        hooks.unreadable,
    );
    counter(
        w,
        "roomcast_hook_connects_total",
        "Connections opened to hook backends.",
        hooks.connects,
    );
    gauge(
        w,
        "roomcast_hook_connections",
        "Connections to hook backends open now, idle ones included.",
        hooks.connections,
    );
    gauge(
        w,
        "roomcast_hook_in_flight",
        "Hook requests on a connection now.",
        hooks.in_flight,
    );
    gauge(
        w,
        "roomcast_hook_queued",
        "Hook requests waiting for a connection now.",
        hooks.queued,
    );
    histogram(
        w,
        "roomcast_hook_duration_seconds",
        "From the hooks thread taking a request to its complete response.",
        &hooks.latency,
    );
    let webhooks = &hooks.webhooks;
    gauge(
        w,
        "roomcast_webhook_queued",
        "Webhook events waiting to be acknowledged, the batch in flight included.",
        webhooks.queued,
    );
    counter(
        w,
        "roomcast_webhook_delivered_total",
        "Webhook events the backend acknowledged (2xx).",
        webhooks.delivered,
    );
    counter(
        w,
        "roomcast_webhook_retries_total",
        "Webhook batches tried again after a failure or a non-2xx answer.",
        webhooks.retries,
    );
    let name = "roomcast_webhook_dropped_total";
    header(
        w,
        name,
        "Webhook events dropped: the queue was full, or their batch ran out of --webhook-retry.",
        "counter",
    );
    let _ = writeln!(
        w,
        "{name}{{reason=\"queue_full\"}} {}",
        webhooks.dropped_queue
    );
    let _ = writeln!(
        w,
        "{name}{{reason=\"retry_expired\"}} {}",
        webhooks.dropped_retry
    );
}

fn header(w: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(w, "# HELP {name} {help}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

/// One series per shard, labelled `shard="i"`.
fn per_shard<V: std::fmt::Display>(
    w: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    shards: &[ShardSnapshot],
    value: impl Fn(&ShardSnapshot) -> V,
) {
    header(w, name, help, kind);
    for (i, shard) in shards.iter().enumerate() {
        let _ = writeln!(w, "{name}{{shard=\"{i}\"}} {}", value(shard));
    }
}

fn gauge(w: &mut String, name: &str, help: &str, value: u64) {
    header(w, name, help, "gauge");
    let _ = writeln!(w, "{name} {value}");
}

fn counter(w: &mut String, name: &str, help: &str, value: u64) {
    header(w, name, help, "counter");
    let _ = writeln!(w, "{name} {value}");
}

fn histogram(w: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    header(w, name, help, "histogram");
    histogram_series(w, name, "", h);
}

/// The series of one histogram, cumulative; `labels` is empty or ends
/// with a comma.
fn histogram_series(w: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let mut cumulative = 0;
    for (bound_us, count) in h.bounds_us.iter().zip(&h.counts) {
        cumulative += count;
        let le = *bound_us as f64 / 1e6;
        let _ = writeln!(w, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(w, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", h.count());
    let labels = labels.trim_end_matches(',');
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(w, "{name}_sum{braces} {}", h.sum_ns as f64 / 1e9);
    let _ = writeln!(w, "{name}_count{braces} {}", h.count());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardMetrics;
    use std::time::Duration;

    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn renders_gauges_labelled_counters_and_cumulative_histograms() {
        let shards = [ShardMetrics::default()];
        shards[0].count_close(1000);
        shards[0].count_close(1000);
        shards[0].fanout_latency.observe(Duration::from_micros(3));
        shards[0].fanout_latency.observe(Duration::from_micros(40));
        let text = render(&Snapshot::gather(&shards, 3, 2), 1.5, "0.1.0");
        assert_eq!(sample(&text, "roomcast_connections"), 3.0);
        assert_eq!(sample(&text, "roomcast_users"), 2.0);
        assert_eq!(
            sample(&text, "roomcast_connections_closed_total{code=\"1000\"}"),
            2.0
        );
        assert_eq!(
            sample(
                &text,
                "roomcast_fanout_duration_seconds_bucket{le=\"0.000005\"}"
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                "roomcast_fanout_duration_seconds_bucket{le=\"0.00005\"}"
            ),
            2.0
        );
        assert_eq!(
            sample(
                &text,
                "roomcast_fanout_duration_seconds_bucket{le=\"+Inf\"}"
            ),
            2.0
        );
        assert_eq!(sample(&text, "roomcast_fanout_duration_seconds_count"), 2.0);
        assert_eq!(
            sample(&text, "roomcast_shard_connections{shard=\"0\"}"),
            0.0
        );
        assert_eq!(sample(&text, "roomcast_shard_inbox{shard=\"0\"}"), 0.0);
        assert_eq!(
            sample(&text, "roomcast_shard_read_pauses_total{shard=\"0\"}"),
            0.0
        );
        assert!(text.contains("# TYPE roomcast_handshake_duration_seconds histogram\n"));
        assert!(text.ends_with("roomcast_build_info{version=\"0.1.0\"} 1\n"));
    }

    #[test]
    fn renders_api_calls_by_method_and_status_with_cumulative_latency() {
        use crate::api::Method;
        use crate::metrics::{API_METHODS, API_STATUSES};
        let shards = [ShardMetrics::default()];
        let publish = Method::Publish.index();
        shards[0].count_api(publish, 200, Duration::from_micros(80));
        shards[0].count_api(publish, 200, Duration::from_millis(2));
        shards[0].count_api(publish, 502, Duration::from_millis(2));
        shards[0].count_api(usize::MAX, 404, Duration::ZERO);
        let text = render(&Snapshot::gather(&shards, 0, 0), 1.0, "0.1.0");
        let requests = |method: &str, status: &str| {
            let series =
                format!("roomcast_api_requests_total{{method=\"{method}\",status=\"{status}\"}}");
            sample(&text, &series)
        };
        assert_eq!(requests("publish", "200"), 2.0);
        assert_eq!(requests("publish", "other"), 1.0);
        assert_eq!(requests("history_remove", "413"), 0.0);
        assert_eq!(requests("unknown", "404"), 1.0);
        let series = text
            .lines()
            .filter(|l| l.starts_with("roomcast_api_requests_total{"))
            .count();
        assert_eq!(series, API_METHODS * (API_STATUSES.len() + 1));
        let bucket = |le: &str| {
            let series = format!(
                "roomcast_api_request_duration_seconds_bucket{{method=\"publish\",le=\"{le}\"}}"
            );
            sample(&text, &series)
        };
        assert_eq!(bucket("0.0001"), 1.0);
        assert_eq!(bucket("0.001"), 1.0);
        assert_eq!(bucket("0.0025"), 3.0);
        assert_eq!(bucket("+Inf"), 3.0);
        let publish_count = "roomcast_api_request_duration_seconds_count{method=\"publish\"}";
        assert_eq!(sample(&text, publish_count), 3.0);
        let publish_sum = "roomcast_api_request_duration_seconds_sum{method=\"publish\"}";
        assert!((sample(&text, publish_sum) - 0.00408).abs() < 1e-9);
        assert!(text.contains("# TYPE roomcast_api_request_duration_seconds histogram\n"));
        assert!(!text.contains("roomcast_api_request_duration_seconds_count{method=\"unknown\"}"));
        // Unlabelled histograms keep their plain sum and count.
        assert_eq!(sample(&text, "roomcast_fanout_duration_seconds_count"), 0.0);
    }
}
