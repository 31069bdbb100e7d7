//! The units a configuration value is written in: durations ("500ms", "10s", "2h", "1d"),
//! sizes ("4096", "512KiB", "4GiB"), base URIs and socket addresses, each refused with its key.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::ConfigError;
use crate::rrdp::uri::BaseUri;

/// Why a duration or size was refused (the reason names the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

/// Parses "500ms", "10s", "5m", "2h", "1d" (one number, one unit).
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    duration_text(s).map_err(ValueError)
}

/// Parses "256MiB", "1GiB", "512KiB", "100MB", "4096" (bytes).
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    size_text(s).map_err(ValueError)
}

pub(super) fn duration_text(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit: write e.g. \"10s\", \"5m\", \"2h\""))?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like \"10s\""))?;
    let secs = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m, h or d)")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub(super) fn size_text(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like \"256MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub(super) fn base_uri(key: &str, s: &str) -> Result<BaseUri, ConfigError> {
    BaseUri::parse(s).map_err(|e| ConfigError::new(key, e.0))
}

pub(super) fn socket_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("{s:?} is not an address:port (e.g. \"127.0.0.1:8080\" or \"[::]:443\")"),
        )
    })
}

pub(super) fn opt_duration(key: &str, s: Option<String>) -> Result<Option<Duration>, ConfigError> {
    s.map(|s| parse_duration(&s).map_err(|e| ConfigError::new(key, e.0)))
        .transpose()
}

pub(super) fn opt_size(key: &str, s: Option<String>) -> Result<Option<u64>, ConfigError> {
    s.map(|s| parse_size(&s).map_err(|e| ConfigError::new(key, e.0)))
        .transpose()
}
