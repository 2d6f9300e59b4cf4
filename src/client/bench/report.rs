//! What a run measured: worker lines, the aggregate, and its table or JSON.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use simd_json::prelude::*;

use crate::client::bench::args::BenchArgs;
use crate::client::bench::failure::FailureCounts;
use crate::client::bench::last_delivery::{LastDelivery, Spread};

/// A worker's counters, once a second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub sent: u64,
    pub delivered: u64,
    pub connected: u64,
    pub handshakes: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// A worker's final tallies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerResult {
    pub sent: u64,
    pub delivered: u64,
    pub out_of_order: u64,
    pub handshakes: u64,
    pub errors: FailureCounts,
    pub connected: u64,
    /// Per room: messages acknowledged (roomcast) or sent (peers).
    pub published: Vec<u64>,
    /// The latency histogram, base64 of its V2 serialization.
    pub latency: String,
    /// CPU time the worker process used in the measured window and drain.
    pub cpu_seconds: f64,
    /// Bytes read off the sockets from the measured window on.
    pub bytes_read: u64,
    /// Messages that arrived compressed (permessage-deflate).
    pub compressed: u64,
    /// `--reconnect-rate`: joins of reconnecting clients answered
    /// `recovered: true`.
    pub recovered: u64,
    /// The idle scenario: each message's latest delivery seen here.
    pub last_delivery: LastDelivery,
}

fn field(value: &simd_json::BorrowedValue<'_>, name: &str) -> u64 {
    value.get(name).and_then(|v| v.as_u64()).unwrap_or(0)
}

impl Progress {
    pub fn to_json(self) -> String {
        format!(
            r#"{{"sent":{},"delivered":{},"connected":{},"handshakes":{},"errors":{},"p50_us":{},"p99_us":{}}}"#,
            self.sent,
            self.delivered,
            self.connected,
            self.handshakes,
            self.errors,
            self.p50_us,
            self.p99_us
        )
    }

    pub fn from_json(text: &str) -> Option<Self> {
        let mut bytes = text.as_bytes().to_vec();
        let value = simd_json::to_borrowed_value(&mut bytes).ok()?;
        Some(Self {
            sent: field(&value, "sent"),
            delivered: field(&value, "delivered"),
            connected: field(&value, "connected"),
            handshakes: field(&value, "handshakes"),
            errors: field(&value, "errors"),
            p50_us: field(&value, "p50_us"),
            p99_us: field(&value, "p99_us"),
        })
    }
}

impl WorkerResult {
    pub fn to_json(&self) -> String {
        let published: Vec<String> = self.published.iter().map(u64::to_string).collect();
        format!(
            r#"{{"sent":{},"delivered":{},"out_of_order":{},"handshakes":{},"errors":{},"connected":{},"published":[{}],"latency":"{}","cpu_seconds":{},"bytes_read":{},"compressed":{},"recovered":{},"last_delivery":{}}}"#,
            self.sent,
            self.delivered,
            self.out_of_order,
            self.handshakes,
            self.errors.to_json(),
            self.connected,
            published.join(","),
            self.latency,
            self.cpu_seconds,
            self.bytes_read,
            self.compressed,
            self.recovered,
            self.last_delivery.to_json()
        )
    }

    pub fn from_json(text: &str) -> Option<Self> {
        let mut bytes = text.as_bytes().to_vec();
        let value = simd_json::to_borrowed_value(&mut bytes).ok()?;
        let published = value
            .get("published")?
            .as_array()?
            .iter()
            .filter_map(|v| v.as_u64())
            .collect();
        Some(Self {
            sent: field(&value, "sent"),
            delivered: field(&value, "delivered"),
            out_of_order: field(&value, "out_of_order"),
            handshakes: field(&value, "handshakes"),
            errors: value
                .get("errors")
                .map(FailureCounts::from_json)
                .unwrap_or_default(),
            connected: field(&value, "connected"),
            published,
            latency: value.get("latency")?.as_str()?.to_owned(),
            cpu_seconds: value
                .get("cpu_seconds")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0),
            bytes_read: field(&value, "bytes_read"),
            compressed: field(&value, "compressed"),
            recovered: field(&value, "recovered"),
            last_delivery: value
                .get("last_delivery")
                .map(LastDelivery::from_json)
                .unwrap_or_default(),
        })
    }
}

/// Server figures over the measured window (with `--server-pid`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerFigures {
    pub cpu_seconds: f64,
    /// The part of `cpu_seconds` in user space.
    pub user_cpu_seconds: f64,
    pub rss_before: u64,
    pub rss_after: u64,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub window_seconds: f64,
    pub connected: u64,
    pub sent: u64,
    pub delivered: u64,
    pub expected: Option<u64>,
    pub out_of_order: u64,
    pub handshakes: u64,
    pub errors: FailureCounts,
    pub latency: Histogram<u64>,
    pub server: Option<ServerFigures>,
    pub bench_cpu_seconds: f64,
    pub bench_threads: usize,
    /// Bytes the clients read off their sockets from the measured window on.
    pub bytes_read: u64,
    /// Messages that arrived compressed (permessage-deflate).
    pub compressed: u64,
    /// Reconnecting clients' joins answered `recovered: true`.
    pub recovered: u64,
    /// The idle scenario: each message's last delivery.
    pub last_delivery: LastDelivery,
}

impl Summary {
    fn lost(&self) -> Option<u64> {
        self.expected.map(|e| e.saturating_sub(self.delivered))
    }

    fn duplicates(&self) -> Option<u64> {
        self.expected.map(|e| self.delivered.saturating_sub(e))
    }

    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.window_seconds.max(1e-9)
    }

    /// Server CPU per delivered message, or per handshake when nothing was
    /// delivered (the connect scenario).
    fn server_cpu_us_per_message(&self) -> Option<f64> {
        let server = self.server?;
        let operations = if self.delivered > 0 {
            self.delivered
        } else {
            self.handshakes
        };
        (operations > 0).then(|| server.cpu_seconds * 1e6 / operations as f64)
    }

    /// Bytes on the wire per delivered message (everything read, acks and
    /// frame headers included, over the deliveries).
    fn bytes_per_delivery(&self) -> Option<f64> {
        (self.delivered > 0).then(|| self.bytes_read as f64 / self.delivered as f64)
    }

    fn rss_per_connection(&self) -> Option<f64> {
        let server = self.server?;
        (self.connected > 0)
            .then(|| (server.rss_after as f64 - server.rss_before as f64) / self.connected as f64)
    }

    fn bench_utilization(&self) -> f64 {
        self.bench_cpu_seconds / (self.window_seconds.max(1e-9) * self.bench_threads.max(1) as f64)
    }

    /// Which side ran out of CPU first.
    pub fn saturated(&self) -> &'static str {
        if self.bench_utilization() > 0.85 {
            "load generator (the server figures are a lower bound)"
        } else if self
            .server
            .is_some_and(|s| s.cpu_seconds / self.window_seconds.max(1e-9) > 0.85)
        {
            "server"
        } else {
            "neither (latency- or rate-bound)"
        }
    }

    fn percentile(&self, q: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_quantile(q)
        }
    }

    /// The result as one JSON object.
    pub fn to_json(&self, args: &BenchArgs) -> String {
        let opt = |v: Option<f64>| v.map_or("null".to_owned(), |v| format!("{v:.3}"));
        let opt_u = |v: Option<u64>| v.map_or("null".to_owned(), |v| v.to_string());
        let server = self.server.map_or("null".to_owned(), |s| {
            format!(
                r#"{{"cpu_seconds":{:.4},"user_cpu_seconds":{:.4},"cpu_us_per_message":{},"rss_before_bytes":{},"rss_after_bytes":{},"rss_per_connection_bytes":{}}}"#,
                s.cpu_seconds,
                s.user_cpu_seconds,
                opt(self.server_cpu_us_per_message()),
                s.rss_before,
                s.rss_after,
                opt(self.rss_per_connection())
            )
        });
        format!(
            concat!(
                r#"{{"scenario":"{}","target":"{}","protocol":"{}","conns":{},"rooms":{},"publishers":{},"size":{},"window":{},"rate":{},"#,
                r#""duration_seconds":{:.3},"connected":{},"sent":{},"delivered":{},"expected":{},"lost":{},"duplicates":{},"out_of_order":{},"#,
                r#""handshakes":{},"errors":{},"errors_by_kind":{},"messages_per_second":{:.1},"handshakes_per_second":{:.1},"#,
                r#""bytes_read":{},"bytes_per_delivery":{},"compressed":{},"recovered":{},"#,
                r#""latency_us":{{"p50":{},"p90":{},"p99":{},"p999":{},"max":{}}},"last_delivery_us":{},"server":{},"#,
                r#""bench":{{"cpu_seconds":{:.4},"threads":{},"utilization":{:.3}}},"saturated":"{}"}}"#
            ),
            name(&args.scenario),
            name(&args.target),
            name(&args.protocol),
            args.conns,
            args.rooms,
            args.publishers,
            args.size,
            args.window,
            args.rate,
            self.window_seconds,
            self.connected,
            self.sent,
            self.delivered,
            opt_u(self.expected),
            opt_u(self.lost()),
            opt_u(self.duplicates()),
            self.out_of_order,
            self.handshakes,
            self.errors.total(),
            self.errors.to_json(),
            self.rate(self.delivered),
            self.rate(self.handshakes),
            self.bytes_read,
            opt(self.bytes_per_delivery()),
            self.compressed,
            self.recovered,
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.percentile(0.999),
            self.latency.max(),
            self.last_delivery_json(),
            server,
            self.bench_cpu_seconds,
            self.bench_threads,
            self.bench_utilization(),
            self.saturated()
        )
    }

    /// `{"rooms":{..},"common":{..}}` (each `null` without messages), or
    /// `null` when no message was timed so.
    fn last_delivery_json(&self) -> String {
        if self.last_delivery.is_empty() {
            return "null".to_owned();
        }
        let spread = |common| {
            self.last_delivery
                .spread(common)
                .map_or("null".to_owned(), Spread::to_json)
        };
        format!(r#"{{"rooms":{},"common":{}}}"#, spread(false), spread(true))
    }

    /// The result as a human-readable table.
    pub fn to_table(&self, args: &BenchArgs) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "roomcast bench {} against {} ({}, {})",
            name(&args.scenario),
            args.addr,
            name(&args.target),
            name(&args.protocol)
        );
        let row = |out: &mut String, name: &str, value: String| {
            let _ = writeln!(out, "  {name:<28} {value}");
        };
        row(
            &mut out,
            "measured window",
            format!("{:.2} s", self.window_seconds),
        );
        row(&mut out, "connections", self.connected.to_string());
        row(&mut out, "sent", self.sent.to_string());
        row(
            &mut out,
            "delivered",
            format!("{} ({:.0}/s)", self.delivered, self.rate(self.delivered)),
        );
        if let (Some(expected), Some(lost), Some(dup)) =
            (self.expected, self.lost(), self.duplicates())
        {
            row(
                &mut out,
                "expected / lost / duplicate",
                format!("{expected} / {lost} / {dup}"),
            );
        }
        row(&mut out, "out of order", self.out_of_order.to_string());
        row(
            &mut out,
            "handshakes",
            format!("{} ({:.0}/s)", self.handshakes, self.rate(self.handshakes)),
        );
        row(&mut out, "errors", errors_row(&self.errors));
        if let Some(bytes) = self.bytes_per_delivery() {
            row(
                &mut out,
                "bytes read per delivery",
                format!("{bytes:.1} B ({} B in all)", self.bytes_read),
            );
        }
        if self.compressed > 0 {
            row(&mut out, "arrived compressed", self.compressed.to_string());
        }
        row(
            &mut out,
            "latency µs p50/p90/p99/p99.9/max",
            format!(
                "{} / {} / {} / {} / {}",
                self.percentile(0.5),
                self.percentile(0.9),
                self.percentile(0.99),
                self.percentile(0.999),
                self.latency.max()
            ),
        );
        for (name, common) in [
            ("last delivery, rooms", false),
            ("last delivery, common room", true),
        ] {
            if let Some(s) = self.last_delivery.spread(common) {
                row(
                    &mut out,
                    &format!("{name} µs p50/p99/max"),
                    format!(
                        "{} / {} / {} ({} messages)",
                        s.p50_us, s.p99_us, s.max_us, s.messages
                    ),
                );
            }
        }
        if let Some(server) = self.server {
            row(
                &mut out,
                "server CPU",
                format!(
                    "{:.3} s ({:.3} s in user space)",
                    server.cpu_seconds, server.user_cpu_seconds
                ),
            );
            if let Some(us) = self.server_cpu_us_per_message() {
                let unit = if self.delivered > 0 {
                    "message"
                } else {
                    "handshake"
                };
                row(
                    &mut out,
                    &format!("server CPU per {unit}"),
                    format!("{us:.3} µs"),
                );
            }
            row(
                &mut out,
                "server RSS before / after",
                format!(
                    "{} / {} KiB",
                    server.rss_before / 1024,
                    server.rss_after / 1024
                ),
            );
            if let Some(per) = self.rss_per_connection() {
                row(&mut out, "server RSS per connection", format!("{per:.0} B"));
            }
        }
        row(
            &mut out,
            "load generator CPU",
            format!(
                "{:.3} s ({:.0}% of {} threads)",
                self.bench_cpu_seconds,
                self.bench_utilization() * 100.0,
                self.bench_threads
            ),
        );
        row(&mut out, "saturated", self.saturated().to_owned());
        out
    }
}

/// `12 (http_503 10, refused 2)`: the total, then each kind, most
/// frequent first.
fn errors_row(errors: &FailureCounts) -> String {
    let kinds: Vec<String> = errors
        .by_frequency()
        .into_iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    match kinds.is_empty() {
        true => "0".to_owned(),
        false => format!("{} ({})", errors.total(), kinds.join(", ")),
    }
}

/// The name a value enum has on the command line (`fanout`, `socketio`).
fn name(value: &impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_lines_round_trip() {
        let mut errors = FailureCounts::default();
        errors.add(crate::client::bench::failure::Failure::Http(503));
        let result = WorkerResult {
            sent: 5,
            delivered: 7,
            out_of_order: 1,
            handshakes: 2,
            errors,
            connected: 3,
            published: vec![4, 1],
            latency: "abc=".into(),
            cpu_seconds: 0.25,
            bytes_read: 9000,
            compressed: 6,
            recovered: 8,
            last_delivery: {
                let mut latest = LastDelivery::default();
                latest.note(3, true, 40);
                latest
            },
        };
        assert_eq!(WorkerResult::from_json(&result.to_json()), Some(result));
        let progress = Progress {
            sent: 1,
            delivered: 2,
            connected: 3,
            handshakes: 4,
            errors: 5,
            p50_us: 6,
            p99_us: 7,
        };
        assert_eq!(Progress::from_json(&progress.to_json()), Some(progress));
    }
}
