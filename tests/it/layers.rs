//! The architecture as a test: every top-level module of the crate uses only modules of a
//! lower layer (docs/design.md, "Layout"), so dependencies point one way and there is no
//! import cycle. A `use crate::…` that points up or sideways fails here with the file and line.

use std::path::{Path, PathBuf};

/// The layers, lowest first; a module may use only modules of an earlier layer.
const LAYERS: &[&[&str]] = &[
    &["rrdp", "clock", "heap", "metrics", "man"],
    &["objects"],
    &["config", "demo"],
    &["effective", "erik"],
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

/// The longest a function outside test modules may be, in lines from its `fn` line to its
/// closing brace, and the two parsers allowed past it: each reads best as one loop over its
/// input (`rrdp::content::walk_with`, the snapshot/delta walk; `rrdp::notification::parse`).
const LONGEST_FN: usize = 80;
const LONG_ALLOWED: &[(&str, &str)] = &[
    ("src/rrdp/content.rs", "walk_with"),
    ("src/rrdp/notification.rs", "parse"),
];

/// The functions of `text` longer than `LONGEST_FN` lines, outside `#[cfg(test)] mod`s,
/// counted by brace matching from the `fn` line (braces in strings and comments count too:
/// the code base has few, and a miscount errs on the long side).
fn long_functions(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let block_end = |from: usize| {
        let mut depth = 0i64;
        let mut opened = false;
        for (k, l) in lines.iter().enumerate().skip(from) {
            depth += l.matches('{').count() as i64 - l.matches('}').count() as i64;
            opened |= l.contains('{');
            if (opened && depth <= 0) || (!opened && l.trim_end().ends_with(';')) {
                return k;
            }
        }
        lines.len() - 1
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim_start();
        if l.starts_with("#[cfg(test)]")
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            i = block_end(i + 1) + 1;
            continue;
        }
        let words: Vec<&str> = l.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| *w == "fn") {
            let before_ok = words[..at]
                .iter()
                .all(|w| w.starts_with("pub") || ["async", "const", "unsafe"].contains(w));
            if before_ok {
                let name: String = words
                    .get(at + 1)
                    .unwrap_or(&"")
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let len = block_end(i) - i + 1;
                if len > LONGEST_FN {
                    out.push((name, len));
                }
            }
        }
        i += 1;
    }
    out
}

#[test]
fn no_function_is_longer_than_eighty_lines_but_two_parsers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut long = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        for (name, len) in long_functions(&std::fs::read_to_string(&f).unwrap()) {
            if !LONG_ALLOWED.contains(&(rel.as_str(), name.as_str())) {
                long.push(format!("{rel}: {name} ({len} lines)"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these (docs/design.md, issue 27):\n{}",
        long.join("\n")
    );
    // The counter itself counts.
    let sample = format!("fn f() {{\n{}}}\n", "    x();\n".repeat(LONGEST_FN));
    assert_eq!(
        long_functions(&sample),
        vec![("f".to_string(), LONGEST_FN + 2)]
    );
}
