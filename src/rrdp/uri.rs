//! Base URIs of repositories and passthrough trees, and the relative paths under them.
//!
//! RFC 9674: snapshot and delta URIs share the notification's scheme, host and port. We hold a
//! repository's two bases (what clients use, and the same tree at the upstream) and accept a
//! URI only if it lies under one of them. Everything after the base is a *relative path*, which
//! is checked to be harmless before it names anything on the upstream or in our store.

use std::fmt;

/// An absolute http(s) URI that ends in `/`, under which a tree of files lives.
#[derive(Clone, PartialEq, Eq)]
pub struct BaseUri {
    /// "http" or "https", lower case.
    scheme: String,
    /// Host as written, lower case (a name, an IPv4 address or a bracketed IPv6 address).
    host: String,
    /// Explicit or default port.
    port: u16,
    /// Path, starting and ending with `/`.
    path: String,
}

/// Why a base URI was refused (the reason names the URI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriError(pub String);

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UriError {}

impl BaseUri {
    /// Parses and checks a base URI: http or https, a host, no query or fragment, a path that
    /// ends in `/`.
    pub fn parse(s: &str) -> Result<BaseUri, UriError> {
        BaseUri::parse_text(s).map_err(UriError)
    }

    fn parse_text(s: &str) -> Result<BaseUri, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URI: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some(sc) if sc.eq_ignore_ascii_case("http") => "http",
            Some(sc) if sc.eq_ignore_ascii_case("https") => "https",
            _ => return Err(format!("{s:?} must be an http:// or https:// URI")),
        };
        let auth = uri
            .authority()
            .ok_or_else(|| format!("{s:?} has no host"))?;
        if auth.as_str().contains('@') {
            return Err(format!("{s:?} must not contain user information"));
        }
        let host = auth.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        let port = auth
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        if uri.query().is_some() || s.contains('#') {
            return Err(format!("{s:?} must not have a query or fragment"));
        }
        let path = uri.path().to_string();
        if !path.ends_with('/') {
            return Err(format!("{s:?} must end with '/' (it names a directory)"));
        }
        if path != "/" && !is_safe_relative(&path[1..path.len() - 1]) {
            return Err(format!("{s:?} has an unsafe path"));
        }
        Ok(BaseUri {
            scheme: scheme.to_string(),
            host,
            port,
            path,
        })
    }

    pub fn is_tls(&self) -> bool {
        self.scheme == "https"
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path, beginning and ending with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The host without IPv6 brackets, as a resolver or TLS SNI wants it.
    pub fn host_for_connect(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The Host header value.
    pub fn authority(&self) -> String {
        let default = if self.is_tls() { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The absolute URI of `rel` under this base.
    pub fn join(&self, rel: &str) -> String {
        format!("{}://{}{}{}", self.scheme, self.authority(), self.path, rel)
    }

    /// The relative path of `uri` if it lies under this base (same scheme, host and port, and
    /// below the path), and the rest is a safe relative path.
    pub fn relative<'a>(&self, uri: &'a str) -> Option<&'a str> {
        let (scheme, rest) = uri.split_once("://")?;
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return None;
        }
        let slash = rest.find('/')?;
        let (auth, path) = rest.split_at(slash);
        let (host, port) = split_authority(auth)?;
        let port = match port {
            Some(p) => p,
            None if self.is_tls() => 443,
            None => 80,
        };
        if !host.eq_ignore_ascii_case(&self.host) || port != self.port {
            return None;
        }
        let rel = path.strip_prefix(self.path.as_str())?;
        is_safe_relative(rel).then_some(rel)
    }

    /// The relative path of a request path under this base's path, if safe.
    pub fn relative_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        let rel = path.strip_prefix(self.path.as_str())?;
        is_safe_relative(rel).then_some(rel)
    }
}

impl fmt::Display for BaseUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.join(""))
    }
}

impl fmt::Debug for BaseUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BaseUri({self})")
    }
}

/// Splits "host:port", "[v6]:port", "host" into host and port.
fn split_authority(auth: &str) -> Option<(&str, Option<u16>)> {
    if auth.contains('@') {
        return None;
    }
    let (host, port) = if let Some(end) = auth.strip_prefix('[').and_then(|a| a.find(']')) {
        let host = &auth[..end + 2];
        let rest = &auth[end + 2..];
        (host, rest.strip_prefix(':'))
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (auth, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((host, port))
}

/// Whether `rel` is a harmless relative path: non-empty segments of unreserved characters
/// (`A-Za-z0-9-._~`), none of them `.` or `..`, no leading or doubled `/`, no query, no
/// percent-encoding, no backslash. Every spelling of path traversal fails this test, so a
/// relative path that passes can be appended to a base without leaving it.
pub fn is_safe_relative(rel: &str) -> bool {
    if rel.is_empty() || rel.len() > MAX_RELATIVE_LEN {
        return false;
    }
    rel.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    })
}

/// Longest relative path accepted; Krill's are under 120 characters.
const MAX_RELATIVE_LEN: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_join() {
        let b = BaseUri::parse("https://RRDP.test:8443/rrdp/").unwrap();
        assert_eq!(b.host(), "rrdp.test");
        assert_eq!(b.port(), 8443);
        assert_eq!(b.join("a/b.xml"), "https://rrdp.test:8443/rrdp/a/b.xml");
        let b = BaseUri::parse("https://rrdp.test/").unwrap();
        assert_eq!(b.port(), 443);
        assert_eq!(b.join("n.xml"), "https://rrdp.test/n.xml");
    }

    #[test]
    fn parse_refuses() {
        for bad in [
            "ftp://x/rrdp/",
            "http://x/rrdp",
            "http:///rrdp/",
            "http://x/rrdp/?q=1",
            "http://u@x/rrdp/",
            "rrdp/",
            "http://x/a/../b/",
        ] {
            assert!(BaseUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_only_under_same_origin() {
        let b = BaseUri::parse("https://rrdp.test:8443/rrdp/").unwrap();
        assert_eq!(
            b.relative("https://rrdp.test:8443/rrdp/s/1/snapshot.xml"),
            Some("s/1/snapshot.xml")
        );
        assert_eq!(
            b.relative("HTTPS://RRDP.TEST:8443/rrdp/x.xml"),
            Some("x.xml")
        );
        for other in [
            "https://rrdp.test/rrdp/x.xml",
            "https://rrdp.test:8444/rrdp/x.xml",
            "http://rrdp.test:8443/rrdp/x.xml",
            "https://evil.test:8443/rrdp/x.xml",
            "https://rrdp.test:8443/other/x.xml",
            "https://rrdp.test:8443/rrdp/../x.xml",
            "https://rrdp.test:8443/rrdp/%2e%2e/x.xml",
            "https://rrdp.test:8443@evil.test/rrdp/x.xml",
            "file:///etc/passwd",
            "http://169.254.169.254/rrdp/x.xml",
        ] {
            assert_eq!(b.relative(other), None, "{other}");
        }
    }

    #[test]
    fn traversal_spellings_are_unsafe() {
        for bad in [
            "", "..", "../x", "a/../b", "a//b", "/a", "a/", "%2e%2e/x", "a\\b", "a?b", "./a",
            "a/./b",
        ] {
            assert!(!is_safe_relative(bad), "{bad:?}");
        }
        assert!(is_safe_relative("6a1c/12/abc-def/snapshot.xml"));
    }
}
