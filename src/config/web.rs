//! The web group: the optional pages and endpoints of the server
//! (`/echo`, `/demo`, the dashboard at `/`).

use super::JsonFields;

/// What the server serves beside `/ws`, `/publish` and the operator endpoints.
#[derive(Debug, Clone, Copy)]
pub struct WebConfig {
    /// Whether `/echo` is served.
    pub echo: bool,
    /// `--demo`: run the price feed in-process and serve `/demo`.
    pub demo: bool,
    /// `--dashboard`: serve the live dashboard at `/`, beside `/stats`.
    pub dashboard: bool,
}

impl WebConfig {
    pub(super) fn write_json(&self, w: &mut JsonFields) {
        w.bool("echo", self.echo);
        w.bool("demo", self.demo);
        w.bool("dashboard", self.dashboard);
    }
}
