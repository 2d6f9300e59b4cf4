//! A `Snapshot` as the JSON body of `GET /stats`: the figures of
//! `/metrics`, plus uptime, version and the effective configuration (with
//! secrets redacted, see `Config::write_json`).
//!
//! Integers at the top level (`connections`, `users`, `rooms`,
//! `uptime_seconds`), as `docs/protocol.md` section 1 asks; groups below.

use crate::hooks::HookError;
use crate::json::ObjectWriter;
use crate::metrics::{API_UNKNOWN_METHOD, ApiMethodSnapshot, HistogramSnapshot, Snapshot};

/// What `/stats` shows beyond the snapshot.
pub struct About<'a> {
    pub uptime_seconds: u64,
    pub version: &'a str,
    /// The effective configuration, already JSON.
    pub config_json: &'a [u8],
}

/// Appends the `/stats` body to `out`.
pub fn render(out: &mut Vec<u8>, snap: &Snapshot, about: &About<'_>) {
    let mut w = ObjectWriter::new(out);
    w.u64("connections", snap.connections);
    w.u64("users", snap.users);
    w.u64("rooms", snap.rooms);
    w.u64("uptime_seconds", about.uptime_seconds);
    w.str("version", about.version);
    w.open("messages");
    w.u64("in", snap.messages_in);
    w.u64("out", snap.messages_out);
    w.u64("publishes", snap.publishes);
    w.u64("deliveries", snap.deliveries);
    w.u64("dropped", snap.dropped);
    w.u64("conflated", snap.conflated);
    w.u64("rate_limited", snap.rate_limited);
    w.close();
    w.open("bytes");
    w.u64("in", snap.bytes_in);
    w.u64("out", snap.bytes_out);
    w.close();
    w.open("connections_detail");
    w.u64("opened", snap.opened);
    w.u64("closed", snap.closed_total());
    by_code(&mut w, "closed_by_code", &snap.closed);
    w.u64("slow_consumer_closes", snap.slow_consumer_closes);
    w.u64("ping_timeouts", snap.ping_timeouts);
    w.u64("pre_request", snap.pre_request);
    w.u64("pre_request_evicted", snap.pre_request_evicted);
    w.u64("write_buffer_bytes", snap.write_buffer_bytes);
    w.close();
    w.open("handshake_rejections");
    for &(code, count) in &snap.handshake_rejections {
        w.u64(code.as_str(), count);
    }
    w.close();
    w.open("tls");
    w.u64("handshakes", snap.tls_handshakes);
    w.open("failures");
    for &(failure, count) in &snap.tls_failures {
        w.u64(failure.as_str(), count);
    }
    w.close();
    w.close();
    w.open("latency");
    histogram(&mut w, "handshake", &snap.handshake_latency);
    histogram(&mut w, "fanout", &snap.fanout_latency);
    w.close();
    api(&mut w, &snap.api);
    w.objects("shards", snap.shards.iter().enumerate(), |w, (i, shard)| {
        w.u64("shard", i as u64);
        w.u64("connections", shard.connections);
        w.u64("inbox", shard.inbox);
        w.u64("read_pauses", shard.read_pauses);
        w.f64("busy_ratio", shard.busy_ratio);
        w.f64("busy_seconds", shard.busy_seconds);
    });
    w.objects("rooms_top", snap.busiest.iter(), |w, room| {
        w.str("room", &room.room);
        w.u64("members", room.members);
        w.f64(
            "messages_per_second",
            room.messages as f64 * 1000.0 / room.interval_ms.max(1) as f64,
        );
    });
    if let Some(redis) = &snap.redis {
        w.open("redis");
        w.bool("up", redis.up);
        w.u64("reconnects", redis.reconnects);
        w.u64("master_changes", redis.master_changes);
        w.u64("timeouts", redis.timeouts);
        w.u64("pipeline_depth", redis.in_flight);
        histogram(&mut w, "command_latency", &redis.command_latency);
        w.close();
    }
    if let Some(hooks) = &snap.hooks {
        w.open("hooks");
        w.u64("requests", hooks.requests);
        w.u64("responses", hooks.responses);
        w.u64("non_2xx", hooks.non_2xx);
        w.open("failures");
        for (reason, count) in HookError::REASONS.iter().zip(&hooks.failures) {
            w.u64(reason, *count);
        }
        w.close();
        w.u64("unreadable", hooks.unreadable);
        w.u64("connects", hooks.connects);
        w.u64("connections", hooks.connections);
        w.u64("in_flight", hooks.in_flight);
        w.u64("queued", hooks.queued);
        histogram(&mut w, "latency", &hooks.latency);
        let webhooks = &hooks.webhooks;
        w.open("webhooks");
        w.u64("queued", webhooks.queued);
        w.u64("delivered", webhooks.delivered);
        w.u64("retries", webhooks.retries);
        w.open("dropped");
        w.u64("queue_full", webhooks.dropped_queue);
        w.u64("retry_expired", webhooks.dropped_retry);
        w.close();
        w.close();
        w.close();
    }
    w.raw("config", about.config_json);
    w.close();
}

/// `"api":{"<method>":{"requests","by_status":{"200",...,"other"},"latency"}}`,
/// every method, zeros included; `unknown` (a path naming no method) has
/// no `latency`, its calls being refused before any body.
fn api(w: &mut ObjectWriter<'_>, methods: &[ApiMethodSnapshot]) {
    w.open("api");
    for method in methods {
        w.open(method.method);
        w.u64("requests", method.total());
        by_code(w, "by_status", &method.calls);
        if method.method != API_UNKNOWN_METHOD {
            histogram(w, "latency", &method.latency);
        }
        w.close();
    }
    w.close();
}

/// `{"<code>": count, ..., "other": count}` under `key`, code `0` being
/// the slot of every code not listed.
fn by_code(w: &mut ObjectWriter<'_>, key: &str, counts: &[(u16, u64)]) {
    w.open(key);
    for &(code, count) in counts {
        if code == 0 {
            w.u64("other", count);
        } else {
            w.u64(&code.to_string(), count);
        }
    }
    w.close();
}

/// `{"count","sum_seconds","buckets":[{"le_us","count"}...]}` under `key`,
/// counts per bucket (not cumulative); the last bucket has `"le_us": null`.
fn histogram(w: &mut ObjectWriter<'_>, key: &str, h: &HistogramSnapshot) {
    w.open(key);
    w.u64("count", h.count());
    w.f64("sum_seconds", h.sum_ns as f64 / 1e9);
    w.objects("buckets", h.counts.iter().enumerate(), |w, (i, count)| {
        match h.bounds_us.get(i) {
            Some(&bound) => w.u64("le_us", bound),
            None => w.null("le_us"),
        }
        w.u64("count", *count);
    });
    w.close();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::ShardMetrics;

    #[test]
    fn stats_is_one_json_object_with_integers_on_top() {
        let shards = [ShardMetrics::default(), ShardMetrics::default()];
        shards[1].connections.set(4);
        shards[0].messages_in.add(9);
        let snap = Snapshot::gather(&shards, 4, 3);
        let mut out = Vec::new();
        let about = About {
            uptime_seconds: 12,
            version: "0.1.0",
            config_json: br#"{"shards":2}"#,
        };
        render(&mut out, &snap, &about);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"connections":4,"users":3,"rooms":0,"uptime_seconds":12,"version":"0.1.0","messages":{"in":9,"#),
            "{text}"
        );
        assert!(
            text.contains(r#""shards":[{"shard":0,"connections":0,"#),
            "{text}"
        );
        assert!(text.ends_with(r#""config":{"shards":2}}"#), "{text}");
        // simd-json agrees it is JSON.
        let value = simd_json::to_owned_value(&mut out).expect("valid JSON");
        drop(value);
    }

    #[test]
    fn stats_show_api_calls_per_method() {
        use crate::api::Method;
        use simd_json::prelude::*;
        let shards = [ShardMetrics::default()];
        shards[0].count_api(Method::History.index(), 200, Duration::from_micros(300));
        shards[0].count_api(Method::History.index(), 503, Duration::from_secs(20));
        shards[0].count_api(usize::MAX, 404, Duration::ZERO);
        let snap = Snapshot::gather(&shards, 0, 0);
        let mut out = Vec::new();
        let about = About {
            uptime_seconds: 1,
            version: "0.1.0",
            config_json: b"{}",
        };
        render(&mut out, &snap, &about);
        let value = simd_json::to_owned_value(&mut out).expect("valid JSON");
        let history = &value["api"]["history"];
        assert_eq!(history["requests"].as_u64(), Some(2));
        assert_eq!(history["by_status"]["200"].as_u64(), Some(1));
        assert_eq!(history["by_status"]["503"].as_u64(), Some(1));
        assert_eq!(history["by_status"]["other"].as_u64(), Some(0));
        assert_eq!(history["latency"]["count"].as_u64(), Some(2));
        let buckets = history["latency"]["buckets"].as_array().unwrap();
        assert_eq!(buckets[2]["le_us"].as_u64(), Some(500));
        assert_eq!(buckets[2]["count"].as_u64(), Some(1));
        assert!(buckets.last().unwrap()["le_us"].is_null());
        assert_eq!(buckets.last().unwrap()["count"].as_u64(), Some(1));
        let unknown = &value["api"]["unknown"];
        assert_eq!(unknown["by_status"]["404"].as_u64(), Some(1));
        assert!(unknown.get("latency").is_none());
        let methods = value["api"].as_object().unwrap().len();
        assert_eq!(methods, Method::ALL.len() + 1);
    }
}
