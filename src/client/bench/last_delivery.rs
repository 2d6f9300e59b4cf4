//! The time until a message's last delivery: for each message the idle
//! scenario's publisher sent, the latest of its deliveries, gathered over
//! every thread and worker process, then its percentiles, the rooms' and
//! the common room's apart.
//!
//! Owns the per-message maxima, their form on a worker's `RESULT` line and
//! the figures of the report. A message is known by its counter (the one
//! publisher numbers them all).

use std::collections::HashMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use simd_json::prelude::*;

/// The latest delivery seen of each message, in µs after it was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastDelivery {
    /// Message counter → (into the common room, latest delivery).
    latest: HashMap<u64, (bool, u64)>,
}

/// Percentiles of the time until the last delivery, over `messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    pub messages: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl LastDelivery {
    /// A delivery of message `counter`, `latency_us` after it was sent.
    pub fn note(&mut self, counter: u64, common: bool, latency_us: u64) {
        let entry = self.latest.entry(counter).or_insert((common, 0));
        entry.1 = entry.1.max(latency_us);
    }

    /// Takes in what another thread or worker saw.
    pub fn merge(&mut self, other: &LastDelivery) {
        for (&counter, &(common, latency)) in &other.latest {
            self.note(counter, common, latency);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// The messages into the --rooms (`common` false) or the common room.
    pub fn spread(&self, common: bool) -> Option<Spread> {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok()?;
        for &(into_common, latency) in self.latest.values() {
            if into_common == common {
                histogram.saturating_record(latency.max(1));
            }
        }
        (!histogram.is_empty()).then(|| Spread {
            messages: histogram.len(),
            p50_us: histogram.value_at_quantile(0.5),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
        })
    }

    /// `[[counter,common,latency],...]` (common as 0 or 1).
    pub fn to_json(&self) -> String {
        let mut out = String::from("[");
        for (i, (counter, (common, latency))) in self.latest.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            let _ = write!(out, "{comma}[{counter},{},{latency}]", u8::from(*common));
        }
        out.push(']');
        out
    }

    /// What `to_json` wrote; entries that are not three numbers are skipped.
    pub fn from_json(value: &simd_json::BorrowedValue<'_>) -> Self {
        let mut latest = Self::default();
        for entry in value.as_array().into_iter().flatten() {
            let numbers: Vec<u64> = entry
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_u64())
                .collect();
            if let [counter, common, latency] = numbers[..] {
                latest.note(counter, common == 1, latency);
            }
        }
        latest
    }
}

impl Spread {
    pub fn to_json(self) -> String {
        format!(
            r#"{{"messages":{},"p50":{},"p99":{},"max":{}}}"#,
            self.messages, self.p50_us, self.p99_us, self.max_us
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_delivery_of_each_message_counts_over_threads_and_workers() {
        let mut one = LastDelivery::default();
        one.note(1, false, 100);
        one.note(1, false, 300);
        one.note(2, false, 50);
        one.note(3, true, 1000);
        // Exact below 2048 µs at three significant digits.
        let mut other = LastDelivery::default();
        other.note(1, false, 200);
        other.note(2, false, 700);
        other.note(3, true, 1500);
        one.merge(&other);
        let rooms = one.spread(false).unwrap();
        assert_eq!((rooms.messages, rooms.max_us), (2, 700));
        assert_eq!(rooms.p50_us, 300);
        let common = one.spread(true).unwrap();
        assert_eq!(
            (common.messages, common.p50_us, common.max_us),
            (1, 1500, 1500)
        );
        assert_eq!(LastDelivery::default().spread(true), None);
    }

    #[test]
    fn a_worker_line_round_trips() {
        let mut latest = LastDelivery::default();
        latest.note(7, true, 123);
        latest.note(8, false, 45);
        let mut bytes = latest.to_json().into_bytes();
        let value = simd_json::to_borrowed_value(&mut bytes).unwrap();
        assert_eq!(LastDelivery::from_json(&value), latest);
        let mut bytes = br#"[[1,0],"x",[2,0,9]]"#.to_vec();
        let value = simd_json::to_borrowed_value(&mut bytes).unwrap();
        assert_eq!(
            LastDelivery::from_json(&value)
                .spread(false)
                .unwrap()
                .messages,
            1
        );
    }
}
