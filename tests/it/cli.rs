//! The binary's `check` subcommand: valid configs pass, bad ones name the key and the reason.

use std::process::Command;

fn check(text: &str) -> (bool, String) {
    check_in(tempfile::tempdir().unwrap().path(), text)
}

/// `rrdp-proxy check` on `text` written as `dir/proxy.toml`: success and what it printed.
fn check_in(dir: &std::path::Path, text: &str) -> (bool, String) {
    let path = dir.join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rrdp-proxy"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
admin_listen = "127.0.0.1:9090"
[cache]
dir = "./cache"
retain = "2h"
[[repository]]
public = "http://127.0.0.1:8080/rrdp/"
upstream = "http://127.0.0.1:3001/rrdp/"
"#;

#[test]
fn shipped_config_checks_ok() {
    let said = stdout_of(&[
        "check",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml"),
    ]);
    // It says what it checked: listeners, cache, each repository and passthrough.
    for part in [
        "listeners: http 127.0.0.1:8080; admin 127.0.0.1:9090",
        "cache: ",
        "repository http://127.0.0.1:8080/rrdp/ from http://127.0.0.1:3001/rrdp/; validate refuse, TAL ",
        "/demo.tal read",
        "passthrough http://127.0.0.1:8080/ta/",
        "demo Publication Server on 127.0.0.1:3001",
    ] {
        assert!(said.contains(part), "{part:?} in {said}");
    }
}

#[test]
fn bad_configs_are_refused_with_key_and_reason() {
    let (ok, out) = check(GOOD);
    assert!(ok, "{out}");
    let cases = [
        (GOOD.replace("retain = \"2h\"", "retain = \"2 hours\""), "cache.retain:"),
        (
            GOOD.replace("upstream = \"http://127.0.0.1:3001/rrdp/\"", "upstream = \"http://127.0.0.1:3001/rrdp\""),
            "repository[0].upstream:",
        ),
        (
            GOOD.replace("admin_listen = \"127.0.0.1:9090\"", "admin_listen = \"127.0.0.1:8080\""),
            "server.admin_listen:",
        ),
        (GOOD.replace("listen = [\"127.0.0.1:8080\"]", "listen = [\"localhost\"]"), "server.listen[0]:"),
        (format!("{GOOD}upstream_ca = \"/nonexistent/ca.pem\"\n"), "repository[0].upstream_ca:"),
        (GOOD.replace("[cache]", "[cache]\nsize = \"1GiB\""), "unknown field `size`"),
        (format!("{GOOD}[[repository]]\npublic = \"http://127.0.0.1:8080/rrdp/\"\nupstream = \"http://127.0.0.1:3002/rrdp/\"\n"), "overlaps"),
    ];
    for (text, expect) in cases {
        let (ok, out) = check(&text);
        assert!(!ok, "accepted a bad config expecting {expect}");
        assert!(out.contains(expect), "expected {expect:?} in: {out}");
    }
}

/// Regression (issue 18): validating a config created its export directories; `check` must
/// not touch the disk, and a directory that could never be created is still refused.
#[test]
fn check_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{GOOD}export_rrdp = \"exports/rrdp\"\nexport_rsync = \"exports/rsync\"\n");
    let (ok, out) = check_in(dir.path(), &text);
    assert!(ok, "{out}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        ["proxy.toml"],
        "check wrote to the config's directory"
    );

    let (ok, out) = check(&format!("{GOOD}export_rrdp = \"/dev/null/rrdp\"\n"));
    assert!(!ok, "an export under a file was accepted");
    assert!(out.contains("repository[0].export_rrdp:"), "{out}");
}

/// The example configs in etc/ (installed as examples for the deployments the README names)
/// pass `check`, with the files they name made real in a temporary directory: a TLS
/// certificate and key, Krill's TAL, Krill's RRDP directory.
#[test]
fn every_example_config_checks_ok() {
    let top = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=rrdp.example.net", "-keyout"])
        .arg(etc.join("privkey.pem"))
        .arg("-out")
        .arg(etc.join("fullchain.pem"))
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(etc.join("fullchain.pem"), etc.join("krill-ca.pem")).unwrap();
    std::fs::copy(
        top.join("tests/data/krill-testbed/ta.tal"),
        etc.join("ta.tal"),
    )
    .unwrap();
    let krill = dir.path().join("krill-rrdp");
    std::fs::create_dir_all(&krill).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(top.join("etc")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("conf") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/etc/rrdp-proxy/", &format!("{}/", etc.display()))
            .replace(
                "/var/lib/krill/data/repo/rrdp/",
                &format!("{}/", krill.display()),
            )
            .replace(
                "/var/lib/rrdp-proxy",
                &dir.path().join("cache").display().to_string(),
            )
            .replace(
                "/var/www/rrdp",
                &dir.path().join("www").display().to_string(),
            );
        let (ok, out) = check_in(dir.path(), &text);
        assert!(ok, "{}: {out}", path.display());
        round_trip(dir.path(), &text);
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} examples found");
}

/// The manual pages: rrdp-proxy(1) from the command line's definitions, with every command,
/// and rrdp-proxy.conf(5) from docs/configuration.md, with every key it documents; groff
/// (Debian's groff-base, what `man` uses) reads both without a warning.
#[test]
fn the_man_pages_render_and_say_everything() {
    let page = |section: &str| stdout_of(&["man", "--section", section]);
    let (one, five) = (page("1"), page("5"));
    for command in ["check", "config", "sync", "demo", "man"] {
        assert!(
            one.contains(&format!("\\fB{command}\\fR")),
            "{command} in rrdp-proxy(1)"
        );
    }
    for section in ["EXIT STATUS", "SIGNALS", "FILES", "EXAMPLES"] {
        assert!(one.contains(section), "{section} in rrdp-proxy(1)");
    }
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let keys: Vec<&str> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .collect();
    assert!(keys.len() > 40, "{} keys", keys.len());
    for key in keys {
        let roff_key = key.replace('-', "\\-");
        assert!(
            five.contains(&format!("\\fB{roff_key}\\fR")),
            "{key} in rrdp-proxy.conf(5)"
        );
    }
    for (name, text) in [("rrdp-proxy.1", one), ("rrdp-proxy.conf.5", five)] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&file)
            .output()
            .expect("groff (Debian package groff-base)");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.is_empty(),
            "{name}: {warnings}"
        );
    }
}

/// `rrdp-proxy config` on `text` (written as `dir/proxy.toml`).
fn effective(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    stdout_of(&["config", "--config", path.to_str().unwrap()])
}

/// What the binary prints with these arguments; it must succeed.
fn stdout_of(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rrdp-proxy"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The effective configuration of `text` passes `check`, and means the same: read again,
/// it prints the same.
fn round_trip(dir: &std::path::Path, text: &str) {
    let first = effective(dir, text);
    let (ok, out) = check_in(dir, &first);
    assert!(ok, "the effective config is refused: {out}\n{first}");
    assert_eq!(effective(dir, &first), first);
}

#[test]
fn the_effective_config_fills_every_default_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml"))
        .unwrap()
        .replace(
            "\"./cache\"",
            &format!("\"{}/cache\"", dir.path().display()),
        )
        .replace(
            "\"demo.tal\"",
            concat!("\"", env!("CARGO_MANIFEST_DIR"), "/demo.tal\""),
        );
    let text = effective(dir.path(), &shipped);
    // Keys the shipped file does not set are there, with their defaults.
    for line in [
        "max_object_size = \"20000000B\"",
        "retain = \"7200s\"",
        "notification_max_age = \"60s\"",
        "request_timeout = \"10s\"",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    round_trip(dir.path(), &shipped);
    round_trip(dir.path(), GOOD);
}

/// The Debian package's /etc/rrdp-proxy/rrdp-proxy.conf: it passes `check`, it names every
/// key the configuration reference documents, and every default it shows commented out is
/// the default (uncommented, the effective configuration is the same).
#[test]
fn the_packaged_config_names_every_key_with_its_true_default() {
    let top = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(top.join("debian/rrdp-proxy.conf")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = check_in(dir.path(), &text);
    assert!(ok, "{out}");
    let reference = std::fs::read_to_string(top.join("docs/configuration.md")).unwrap();
    // Every table's keys but the demo's (a package runs no demo origin).
    let mut demo = false;
    for line in reference.lines() {
        if line.starts_with("## ") {
            demo = line.contains("[demo]");
        }
        if demo || !line.starts_with("| `") {
            continue;
        }
        let cell = line.split(" | ").next().unwrap();
        for key in cell.split('`').skip(1).step_by(2) {
            assert!(
                text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key} = ")),
                "{key} is not in debian/rrdp-proxy.conf"
            );
        }
    }
    // Uncomment the defaults of the tables that are in force ([server], [cache], …; not the
    // optional ones, whose headers are commented too).
    let mut in_force = true;
    let uncommented: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with('[') {
                in_force = true;
            } else if l.starts_with("# [") {
                in_force = false;
            }
            match l.strip_prefix("# ") {
                Some(setting)
                    if in_force
                        && setting.split_once(" = ").is_some_and(|(k, _)| {
                            k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        })
                        && !setting.contains('#')
                        && !setting.contains("(none)")
                        && !setting.starts_with("threads") =>
                {
                    setting.to_string()
                }
                _ => l.to_string(),
            }
        })
        .collect();
    let uncommented = uncommented.join("\n") + "\n";
    assert!(
        uncommented.contains("\nrequest_timeout = "),
        "{uncommented}"
    );
    assert_eq!(
        effective(dir.path(), &uncommented),
        effective(dir.path(), &text)
    );
}
