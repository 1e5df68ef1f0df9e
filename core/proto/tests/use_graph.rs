//! The module dependency graph of the library crates has no cycle between
//! files: every path a file names (`use` declarations and paths written in
//! the code, through `crate::`, `super::`, `self::` or a child module) is an
//! edge to the file that defines the module it reaches, and a loop among
//! those edges fails the test with the files on it. A module naming its own
//! submodules is no edge: a parent is the facade of its parts (it declares
//! and re-exports them), and its children may use what it defines. Test
//! modules (`#[cfg(test)] mod`) are no part of the library and not counted.
//!
//! A cycle means two files can only be understood, changed and tested
//! together; keeping the graph a DAG keeps each layer (sip → presence →
//! subscription → handlers → shard) usable without the ones above it.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One crate's modules: module path (`crate::a::b`) → source file.
struct Crate {
    modules: BTreeMap<String, PathBuf>,
}

impl Crate {
    fn load(src: &Path) -> Crate {
        let mut modules = BTreeMap::new();
        collect(src, src, &mut modules);
        Crate { modules }
    }

    /// The deepest module a path starting at `from` reaches.
    fn resolve(&self, from: &str, path: &[String]) -> Option<String> {
        let mut module: Vec<String> = from.split("::").map(str::to_owned).collect();
        let mut rest = path;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                module.truncate(1);
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    module.pop()?;
                    rest = &rest[1..];
                }
            }
            Some(first) => {
                // A child module of this one, or nothing of this crate.
                let child = format!("{}::{first}", module.join("::"));
                if !self.modules.contains_key(&child) {
                    return None;
                }
            }
            None => return None,
        }
        let base = module.join("::");
        let mut found = None;
        for segment in rest {
            module.push(segment.clone());
            let candidate = module.join("::");
            if self.modules.contains_key(&candidate) {
                found = Some(candidate);
            } else {
                break;
            }
        }
        // `crate::x::Item` where x has no deeper module: the deepest found.
        found.or_else(|| self.modules.contains_key(&base).then_some(base))
    }

    fn edges(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, file) in &self.modules {
            let text = std::fs::read_to_string(file).unwrap();
            let code = strip_test_modules(&strip_comments_and_strings(&text));
            let targets = edges.entry(module.clone()).or_default();
            for path in paths(&code) {
                if let Some(target) = self.resolve(module, &path) {
                    // A module may name its own submodules: a parent is
                    // the facade of its parts (declarations, re-exports).
                    let descendant = target.starts_with(&format!("{module}::"));
                    if target != *module && !descendant {
                        targets.insert(target);
                    }
                }
            }
        }
        edges
    }

    fn file(&self, module: &str) -> String {
        self.modules[module].display().to_string()
    }
}

/// Every `.rs` file under `dir` as a module of the crate rooted at `root`.
fn collect(root: &Path, dir: &Path, modules: &mut BTreeMap<String, PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, modules);
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let relative = path.strip_prefix(root).unwrap().with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
            parts.pop();
        }
        let mut name = vec!["crate".to_owned()];
        name.extend(parts);
        modules.insert(name.join("::"), path);
    }
}

/// The code without comments, string and char literals (doc comments name
/// paths that are not dependencies).
fn strip_comments_and_strings(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if b == b'/' && bytes.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b == b'r' && matches!(bytes.get(i + 1), Some(b'"' | b'#')) && !is_ident(bytes, i) {
            // raw string r"..." or r#"..."#
            let mut hashes = 0;
            let mut j = i + 1;
            while bytes.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if bytes.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            j += 1;
            let closing: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            while j < bytes.len() && !bytes[j..].starts_with(&closing) {
                j += 1;
            }
            i = j + closing.len();
            out.push_str("\"\"");
        } else if b == b'\'' && bytes.get(i + 2) == Some(&b'\'') {
            i += 3;
        } else if b == b'\'' && bytes.get(i + 1) == Some(&b'\\') {
            i += 2;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += 1;
            }
            i += 1;
        } else {
            out.push(b as char);
            i += 1;
        }
    }
    out
}

/// The code without its `#[cfg(test)] mod … { … }` blocks: tests are not
/// part of the library, and may exercise a module through the layers above
/// it.
fn strip_test_modules(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let after = rest[at + MARK.len()..].trim_start();
        let is_module = after.starts_with("mod ") || after.starts_with("pub mod ");
        let open = after.find('{');
        match (is_module, open) {
            (true, Some(open)) if !after[..open].contains(';') => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (i, c) in after[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => {
                out.push_str(MARK);
                rest = &rest[at + MARK.len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether the byte before `i` continues an identifier (so `r` is not a raw-string prefix).
fn is_ident(bytes: &[u8], i: usize) -> bool {
    i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')
}

/// Every path the code names: `a::b::c` runs, with `use` groups
/// (`a::{b, c::d}`) expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    let tokens = tokenize(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if is_word(&tokens[i])
            && (i == 0 || tokens[i - 1] != "::")
            && tokens.get(i + 1).map(String::as_str) == Some("::")
        {
            let mut prefix = Vec::new();
            i = expand(&tokens, i, &mut prefix, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Read a path at `i` (after `prefix`), pushing every full path; returns
/// the index after it.
fn expand(tokens: &[String], mut i: usize, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let depth = prefix.len();
    loop {
        match tokens.get(i).map(String::as_str) {
            Some("{") => {
                i += 1;
                loop {
                    match tokens.get(i).map(String::as_str) {
                        Some("}") => {
                            i += 1;
                            break;
                        }
                        Some(",") => i += 1,
                        Some(_) => i = expand(tokens, i, prefix, out),
                        None => break,
                    }
                }
                prefix.truncate(depth);
                return i;
            }
            Some(word) if is_word(word) => {
                prefix.push(word.to_owned());
                i += 1;
                if tokens.get(i).map(String::as_str) == Some("::") {
                    i += 1;
                    continue;
                }
                out.push(prefix.clone());
                prefix.truncate(depth);
                return i;
            }
            _ => {
                if prefix.len() > depth {
                    out.push(prefix.clone());
                }
                prefix.truncate(depth);
                return i;
            }
        }
    }
}

fn is_word(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
}

fn tokenize(code: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push("::".to_owned());
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            tokens.push(c.to_string());
            i += 1;
        }
    }
    tokens
}

/// Every cycle's files, one line each (empty when the graph is a DAG).
fn cycles(krate: &Crate) -> Vec<String> {
    let edges = krate.edges();
    // Tarjan's strongly connected components: any component of more than
    // one module is a cycle.
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        components: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.edges.get(v) {
            for w in targets {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let mut state = State {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        components: Vec::new(),
    };
    for module in edges.keys() {
        if !state.index.contains_key(module.as_str()) {
            visit(&mut state, module);
        }
    }
    state
        .components
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut files: Vec<String> = c.iter().map(|m| krate.file(m)).collect();
            files.sort();
            files.join(" <-> ")
        })
        .collect()
}

fn assert_acyclic(src: &Path) {
    let krate = Crate::load(src);
    assert!(krate.modules.len() > 3, "no sources found under {}", src.display());
    let found = cycles(&krate);
    assert!(
        found.is_empty(),
        "import cycles in {}:\n{}",
        src.display(),
        found.join("\n")
    );
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn presence_proto_has_no_import_cycle() {
    assert_acyclic(&manifest_dir().join("src"));
}

#[test]
fn presence_runtime_has_no_import_cycle() {
    assert_acyclic(&manifest_dir().join("../runtime/src"));
}

#[test]
fn presence_mgmt_has_no_import_cycle() {
    assert_acyclic(&manifest_dir().join("../../mgmt/src"));
}

/// The checker finds a cycle when there is one (so a pass means something).
#[test]
fn a_cycle_is_found() {
    let dir = std::env::temp_dir().join(format!("use-graph-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod a;\npub mod b;\npub mod d;\n").unwrap();
    std::fs::write(dir.join("a/mod.rs"), "pub mod c;\nuse c::Thing;\n").unwrap();
    std::fs::write(
        dir.join("a/c.rs"),
        "// use crate::b::Nothing;\nfn f() { super::super::b::g(); }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "use crate::{x, a::c::{self, D}};\n#[cfg(test)]\nmod tests {\n    use crate::d::E;\n}\n",
    )
    .unwrap();
    // d uses b, and only b's tests use d: no cycle.
    std::fs::write(dir.join("d.rs"), "use crate::b::Thing;\n").unwrap();
    let krate = Crate::load(&dir);
    let found = cycles(&krate);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("c.rs") && found[0].contains("b.rs"), "{found:?}");
    assert!(!found[0].contains("d.rs"), "a test module is no edge: {found:?}");
}
