//! The operator's page on the admin listener (`GET /`): one HTML page with its script and
//! style, compiled into the binary (nothing to install, nothing fetched from elsewhere: the
//! admin listener may have no internet). The script polls `/status` and `/history` and
//! renders every value as text, so nothing from the upstream or the config becomes markup.
//! The page only reads: it has no state-changing actions (`POST /refresh` stays an API call).

use http::Response;

/// The page's files.
pub(crate) enum Asset {
    Page,
    Script,
    Style,
}

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/page.js");
const STYLE: &str = include_str!("page/page.css");

/// Only this page's own script, style and API calls: an injected script or style from
/// anywhere would not run even if it got into the page.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn respond(asset: Asset) -> Response<Vec<u8>> {
    let (content_type, body) = match asset {
        Asset::Page => ("text/html; charset=utf-8", PAGE),
        Asset::Script => ("text/javascript; charset=utf-8", SCRIPT),
        Asset::Style => ("text/css; charset=utf-8", STYLE),
    };
    let mut r = crate::ops::admin::respond(200, content_type, body.to_string());
    let headers = r.headers_mut();
    headers.insert(
        "Content-Security-Policy",
        http::HeaderValue::from_static(CSP),
    );
    headers.insert(
        "X-Content-Type-Options",
        http::HeaderValue::from_static("nosniff"),
    );
    r
}
