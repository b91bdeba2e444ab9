//! The web console at `/`: a page, a script and a style sheet compiled into the binary (no
//! build step, works offline), served without a key (they hold no data; every call the page
//! makes carries the key the user types, like any client's). The Content-Security-Policy
//! allows this origin only: no inline script, no third-party origin, no framing.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");
const ICON: &str = include_str!("console/icon.svg");

/// What the page may load and talk to: this origin; images also as the blobs of output files.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(ctype: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // The assets change with the binary: revalidate, never serve a stale script.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The console's routes, for the main listener.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/console/icon.svg", get(|| async { asset("image/svg+xml", ICON) }))
        // Browsers ask for it whatever the page links: an answer, not a 404 in the console.
        .route("/favicon.ico", get(|| async { asset("image/svg+xml", ICON) }))
}
