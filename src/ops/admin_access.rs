//! Who may use the admin listener: the checks made before any admin request is answered.
//!
//! The admin listener is meant for the operator's own machine, but an operator's browser is
//! on that machine too. Without these checks a web page the operator opens could `POST
//! /refresh` (a form post from any site is sent, with `Origin: http://evil.example`), and by
//! DNS rebinding (a name of the attacker's that resolves to 127.0.0.1) read `/status`, with
//! its upstream URLs, TAL paths and `pre_validate` arguments.
//!
//! - **Host**: an IP address (any: a rebinding attack needs a name of its own), `localhost`,
//!   or one of `server.admin_names`; anything else is 421 (the first one is logged). Not
//!   checked for `/healthz` (load balancers address nodes by name, and it tells nothing
//!   secret), nor when `server.admin_token` is set (a rebinding page cannot send the token).
//! - **Origin**: a request that changes state (anything but GET and HEAD) from a browser must
//!   come from the listener's own origin: an `Origin` whose host and port are not the
//!   request's `Host`, or a `Sec-Fetch-Site` of `cross-site` or `same-site`, is 403.
//! - **Token**: with `server.admin_token`, every request but `/healthz` (for load balancers)
//!   and the page's static files (which hold no data) needs `Authorization: Bearer <token>`;
//!   else 401. The page sends the token it finds in its URL's fragment (`/#token=…`).

use std::net::IpAddr;

use http::{HeaderMap, Method};

use crate::config::ServerConfig;
use crate::serve::constant_time_eq;

/// Paths answered without the token: the load balancers' health check and the page's static
/// files.
const OPEN_PATHS: [&str; 4] = ["/healthz", "/", "/page.js", "/page.css"];

/// Why a request is refused: its status and a line for the body.
pub(crate) type Refusal = (u16, &'static str);

/// Checks a request to the admin listener; `Err` with the status and reason to answer.
pub(crate) fn check(
    cfg: &ServerConfig,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("host");
    if let Some(host) = host.filter(|_| cfg.admin_token.is_none() && path != "/healthz") {
        if !host_allowed(cfg, host) {
            static LOGGED: std::sync::Once = std::sync::Once::new();
            LOGGED.call_once(|| {
                log::warn!(
                    "admin listener: refused a request for Host {host:?} (421); add the name to \
                     server.admin_names, or set server.admin_token"
                )
            });
            return Err((421, "unknown Host: add the name to server.admin_names"));
        }
    }
    if method != Method::GET && method != Method::HEAD {
        if let Some(site) = header("sec-fetch-site") {
            if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
                return Err((403, "cross-site request refused"));
            }
        }
        if let Some(origin) = header("origin") {
            let same = match (origin_authority(origin), host) {
                (Some(o), Some(h)) => o.eq_ignore_ascii_case(h),
                _ => false,
            };
            if !same {
                return Err((403, "cross-origin request refused"));
            }
        }
    }
    if let Some(token) = &cfg.admin_token {
        if !OPEN_PATHS.contains(&path) {
            let presented = header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(str::trim);
            let ok = presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()));
            if !ok {
                return Err((401, "a bearer token is needed (server.admin_token)"));
            }
        }
    }
    Ok(())
}

/// Whether the admin listener answers to `host` (a `Host` header: a name or address, and
/// maybe a port).
fn host_allowed(cfg: &ServerConfig, host: &str) -> bool {
    let name = host_name(host);
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || cfg.admin_names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The name or address of a `Host` value, without port or IPv6 brackets.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The `host[:port]` of an `Origin` value (`scheme://host[:port]`), as a `Host` header has
/// it; `None` for `null` and anything malformed.
fn origin_authority(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then_some(authority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn server(extra: &str) -> ServerConfig {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:8080\"]\nadmin_listen = \"127.0.0.1:9090\"\n{extra}\n\
             [[repository]]\npublic = \"http://127.0.0.1:8080/rrdp/\"\nupstream = \"http://127.0.0.1:1/rrdp/\"\n"
        );
        Config::parse(&text, std::path::Path::new("/tmp"))
            .unwrap()
            .server
    }

    fn req(
        cfg: &ServerConfig,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), u16> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        check(cfg, &method.parse().unwrap(), path, &map).map_err(|(s, _)| s)
    }

    /// Regression (issue 26, item 8): `POST /refresh` with a foreign `Origin` was accepted,
    /// and any `Host` was answered.
    #[test]
    fn cross_site_requests_and_foreign_hosts_are_refused() {
        let cfg = server("");
        let local = ("host", "127.0.0.1:9090");
        assert_eq!(req(&cfg, "POST", "/refresh", &[local]), Ok(()));
        assert_eq!(
            req(
                &cfg,
                "POST",
                "/refresh",
                &[local, ("origin", "http://127.0.0.1:9090")]
            ),
            Ok(())
        );
        assert_eq!(
            req(
                &cfg,
                "POST",
                "/refresh",
                &[local, ("origin", "http://evil.example")]
            ),
            Err(403)
        );
        assert_eq!(
            req(&cfg, "POST", "/refresh", &[local, ("origin", "null")]),
            Err(403)
        );
        assert_eq!(
            req(
                &cfg,
                "POST",
                "/refresh",
                &[local, ("sec-fetch-site", "cross-site")]
            ),
            Err(403)
        );
        // DNS rebinding: the attacker's name, pointed at 127.0.0.1.
        assert_eq!(
            req(&cfg, "GET", "/status", &[("host", "evil.example:9090")]),
            Err(421)
        );
        for ok in ["localhost:9090", "[::1]:9090", "10.1.2.3", "LOCALHOST"] {
            assert_eq!(req(&cfg, "GET", "/status", &[("host", ok)]), Ok(()), "{ok}");
        }
        let named = server("admin_names = [\"ops.example.net\"]");
        assert_eq!(
            req(
                &named,
                "GET",
                "/status",
                &[("host", "ops.example.net:9090")]
            ),
            Ok(())
        );
        assert_eq!(
            req(&cfg, "GET", "/status", &[("host", "ops.example.net:9090")]),
            Err(421)
        );
        // A load balancer's health check by name is answered.
        let lb = [("host", "node1.example.net")];
        assert_eq!(req(&cfg, "GET", "/healthz", &lb), Ok(()));
    }

    #[test]
    fn the_token_guards_everything_but_health_and_the_pages_files() {
        let cfg = server("admin_token = \"0123456789abcdef0123\"");
        let host = ("host", "127.0.0.1:9090");
        let bearer = ("authorization", "Bearer 0123456789abcdef0123");
        for path in ["/status", "/metrics", "/history"] {
            assert_eq!(req(&cfg, "GET", path, &[host]), Err(401), "{path}");
            assert_eq!(req(&cfg, "GET", path, &[host, bearer]), Ok(()), "{path}");
            let wrong = ("authorization", "Bearer 0123456789abcdef0124");
            assert_eq!(req(&cfg, "GET", path, &[host, wrong]), Err(401), "{path}");
        }
        assert_eq!(req(&cfg, "POST", "/refresh", &[host]), Err(401));
        assert_eq!(req(&cfg, "POST", "/refresh", &[host, bearer]), Ok(()));
        for path in OPEN_PATHS {
            assert_eq!(req(&cfg, "GET", path, &[host]), Ok(()), "{path}");
        }
    }
}
