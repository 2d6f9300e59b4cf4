//! Files served from the binary itself: the browser client (`/roomcast.js`,
//! kept in the repository as `clients/js/`) and the pages (`/` the dashboard, `/demo`). Owns
//! their bytes and content types; routing is `conn::routes`' business, and
//! nothing here reads the disk at run time.

/// A file served as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// `GET /roomcast.js`: the ES module of `clients/js/roomcast.js`.
pub const CLIENT_JS: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../../clients/js/roomcast.js"),
};

pub mod demo;

/// The `/demo` page (`demo::page` fills in its token and symbol count).
const DEMO_HTML: &str = include_str!("demo.html");

/// `GET /`: the live dashboard, which polls `/stats` on its own port, and
/// the operator console, which calls the server API (`/api/*`) there.
pub const DASHBOARD: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("dashboard.html"),
};

/// The asset at `path`, if any.
pub fn asset(path: &str) -> Option<Asset> {
    match path {
        "/roomcast.js" => Some(CLIENT_JS),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_served_as_a_module() {
        let client = asset("/roomcast.js").unwrap();
        assert!(client.content_type.starts_with("text/javascript"));
        let text = std::str::from_utf8(client.body).unwrap();
        assert!(text.contains("export function connect("));
        assert_eq!(asset("/roomcast"), None);
    }

    /// The console holds an operator's credential and shows what users put
    /// in their tokens: it keeps the one out of storage and the other out of
    /// markup.
    #[test]
    fn the_dashboard_neither_stores_nor_parses_markup() {
        let page = std::str::from_utf8(DASHBOARD.body).unwrap();
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "localStorage",
            "sessionStorage",
            "document.cookie",
        ] {
            assert!(!page.contains(banned), "the dashboard uses {banned}");
        }
        assert!(page.contains("fetch(`/api/${method}`"));
    }
}
