//! The manual pages: `rrdp-proxy.conf(5)` made from docs/configuration.md, the one source of
//! the configuration reference, so the two cannot drift. (`rrdp-proxy(1)` is made from the
//! command line's own definitions, in the binary: `rrdp-proxy man`.)

/// The configuration reference, Markdown as docs/configuration.md has it.
pub(crate) const CONFIGURATION_MD: &str = include_str!("../docs/configuration.md");

/// `rrdp-proxy.conf(5)` in roff (the man macros).
pub fn conf_page(version: &str) -> String {
    let mut out = format!(
        ".TH RRDP\\-PROXY.CONF 5 \"\" \"rrdp-proxy {version}\" \"File Formats\"\n\
         .SH NAME\nrrdp\\-proxy.conf \\- configuration file of rrdp\\-proxy\n\
         .SH SYNOPSIS\n/etc/rrdp\\-proxy/rrdp\\-proxy.conf, or the file given with\n\
         \\fB\\-\\-config\\fR (default \\fIproxy.toml\\fR)\n.SH DESCRIPTION\n"
    );
    out.push_str(&markdown_to_roff(CONFIGURATION_MD));
    out.push_str(".SH SEE ALSO\n\\fBrrdp\\-proxy\\fR(1)\n");
    out
}

/// The Markdown this project's docs use, as man macros: headings (`##` a section, `###` a
/// subsection; the `#` title is left to `.TH`), paragraphs, lists, code blocks, and tables
/// of keys (each row a tagged paragraph: the key with its default, then its meaning).
pub(crate) fn markdown_to_roff(md: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    let mut table_header: Option<Vec<String>> = None;
    for line in md.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            out.push_str(if in_code {
                ".PP\n.nf\n.RS 4\n"
            } else {
                ".RE\n.fi\n"
            });
            continue;
        }
        if in_code {
            out.push_str(&escape_line(&escape(line)));
            out.push('\n');
            continue;
        }
        let trimmed = line.trim();
        if let Some(cells) = table_cells(trimmed) {
            if cells
                .iter()
                .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':' | '|')))
            {
                continue; // the separator row
            }
            match &table_header {
                None => table_header = Some(cells),
                Some(header) => {
                    out.push_str(".TP\n");
                    let mut first = inline(&cells[0]);
                    // The columns between the key and its meaning (type, default).
                    let middle: Vec<String> = header
                        .iter()
                        .zip(&cells)
                        .take(cells.len().saturating_sub(1))
                        .skip(1)
                        .map(|(name, cell)| format!("{}: {}", name, inline(cell)))
                        .collect();
                    if !middle.is_empty() {
                        first.push_str(&format!(" ({})", middle.join("; ")));
                    }
                    out.push_str(&first);
                    out.push('\n');
                    let rest = cells.last().map(String::as_str).unwrap_or("");
                    out.push_str(&inline(rest));
                    out.push('\n');
                }
            }
            continue;
        }
        table_header = None;
        if trimmed.is_empty() {
            out.push_str(".PP\n");
        } else if let Some(h) = trimmed.strip_prefix("### ") {
            out.push_str(&format!(".SS {}\n", inline(h)));
        } else if let Some(h) = trimmed.strip_prefix("## ") {
            out.push_str(&format!(".SH {}\n", inline(h)));
        } else if trimmed.starts_with("# ") {
            continue;
        } else if let Some(item) = trimmed.strip_prefix("- ") {
            out.push_str(".IP \\(bu 2\n");
            out.push_str(&inline(item));
            out.push('\n');
        } else {
            out.push_str(&inline(trimmed));
            out.push('\n');
        }
    }
    out
}

/// The cells of a table row (`| a | b |`), if it is one.
fn table_cells(line: &str) -> Option<Vec<String>> {
    let inner = line.strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split(" | ").map(|c| c.trim().to_string()).collect())
}

/// Inline Markdown as roff: `code` and **bold** in bold, [text](link) as its text; roff's
/// own characters escaped.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("**") {
            if let Some(end) = r.find("**") {
                out.push_str(&format!("\\fB{}\\fR", escape(&r[..end])));
                rest = &r[end + 2..];
                continue;
            }
        }
        if let Some(r) = rest.strip_prefix('`') {
            if let Some(end) = r.find('`') {
                out.push_str(&format!("\\fB{}\\fR", escape(&r[..end])));
                rest = &r[end + 1..];
                continue;
            }
        }
        if let Some(r) = rest.strip_prefix('[') {
            if let Some((label, after)) = r.split_once("](") {
                if let Some(end) = after.find(')') {
                    out.push_str(&escape(label));
                    rest = &after[end + 1..];
                    continue;
                }
            }
        }
        out.push_str(&escape(&c.to_string()));
        rest = &rest[c.len_utf8()..];
    }
    escape_line(&out)
}

/// Escapes roff's special characters in text, and writes what is not ASCII as a Unicode
/// escape (groff reads its input as Latin-1).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c if c.is_ascii() => out.push(c),
            c => out.push_str(&format!("\\[u{:04X}]", u32::from(c))),
        }
    }
    out
}

/// Plain text as a line of roff: its special characters escaped, and no request read into it.
pub fn text(line: &str) -> String {
    escape_line(&escape(line))
}

/// A line may not start with `.` or `'` (roff would read a request).
fn escape_line(line: &str) -> String {
    if line.starts_with('.') || line.starts_with('\'') {
        format!("\\&{line}")
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_becomes_man_macros() {
        let md = "# Title\n\nSome `code` and **bold**, a [link](x.md).\n\n## `[server]`\n\n| key | default | meaning |\n|---|---|---|\n| `listen` | `[]` | Plain-HTTP listeners. |\n\n- one\n\n```\n.dot at start\n```\n";
        let roff = markdown_to_roff(md);
        assert!(
            roff.contains("Some \\fBcode\\fR and \\fBbold\\fR, a link."),
            "{roff}"
        );
        assert!(roff.contains(".SH \\fB[server]\\fR\n"), "{roff}");
        assert!(
            roff.contains(".TP\n\\fBlisten\\fR (default: \\fB[]\\fR)\nPlain\\-HTTP listeners.\n"),
            "{roff}"
        );
        assert!(roff.contains(".IP \\(bu 2\none\n"), "{roff}");
        let typed = markdown_to_roff(
            "| key | type | default | meaning |\n|---|---|---|---|\n| `a` | size | `1` | A. |\n",
        );
        assert!(
            typed.contains("\\fBa\\fR (type: size; default: \\fB1\\fR)\nA.\n"),
            "{typed}"
        );
        assert!(roff.contains("\\&.dot at start"), "{roff}");
    }
}
