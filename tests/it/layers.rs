//! The architecture as a test: every top-level module of the crate uses only modules of a
//! lower layer (docs/design.md, "Layout"), so dependencies point one way and there is no
//! import cycle. A `use crate::…` that points up or sideways fails here with the file and line.

use std::path::{Path, PathBuf};

/// The layers, lowest first; a module may use only modules of an earlier layer.
const LAYERS: &[&[&str]] = &[
    &["rrdp", "clock", "heap", "metrics", "man"],
    &["objects"],
    &["config", "demo"],
    &["effective"],
    &["fuzz_checks", "store"],
    &["origin"],
    &["published"],
    &["sync"],
    &["shared"],
    &["serve"],
    &["ops"],
    &["app"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/sync/round.rs` → `sync`; `src/app.rs` → `app`.
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The `crate::<module>` names a line uses (outside comments), also in a group
/// (`crate::{a, b::C}`).
fn uses(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = group.split('}').next().unwrap_or("");
                out.extend(group.split(',').map(ident).filter(|m| !m.is_empty()));
            }
            None => out.push(ident(rest)),
        }
    }
    out
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let module = top_module(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            wrong.push(format!(
                "{}: module {module} is in no layer",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            // Unit tests may use whatever helps them; the layering is about the product.
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            for used in uses(line) {
                if used == module {
                    continue;
                }
                match layer_of(&used) {
                    Some(l) if l < own => {}
                    _ => wrong.push(format!(
                        "{}:{}: {module} uses crate::{used}",
                        file.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies pointing up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_a_dependency() {
    // The scanner must find what it is meant to judge, or the test above passes vacuously.
    assert_eq!(
        uses("use crate::published::{Generation, Repo};"),
        ["published"]
    );
    assert!(uses("// crate::app in a comment").is_empty());
    assert_eq!(uses("use crate::{demo, ops::admin};"), ["demo", "ops"]);
    assert!(layer_of("sync").unwrap() > layer_of("origin").unwrap());
}
