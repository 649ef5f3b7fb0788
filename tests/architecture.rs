//! The crate's import graph has no cycles: a module may use another only if that one does not,
//! directly or through others, use it back. Every `crate::…`, `super::…` and `self::…` path in
//! `src/` (outside comments) is resolved to the module that defines it; a cycle fails the test
//! with the modules that form it. docs/ARCHITECTURE.md says which way each stage may depend.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every module of the library: its path (`pipeline::denoise`, `""` for the crate root) and its
/// source with comments removed.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().unwrap() != "bin" {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            let mut text = std::fs::read_to_string(&file).unwrap();
            // Unit tests sit in an inline module at the end, whose `super` is this file itself.
            if let Some(at) = text.find("#[cfg(test)]\nmod tests") {
                text.truncate(at);
            }
            let code: String = text.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
            (parts.join("::"), code)
        })
        .collect()
}

/// The paths a module's code names, as absolute segment lists: `use` groups in braces are
/// expanded one level (`crate::nn::{attention::Attention, Linear}` names both).
fn named_paths(module: &str, code: &str) -> Vec<Vec<String>> {
    let here: Vec<String> = module.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_path = ["crate::", "super::", "self::"].iter().find(|p| bytes[i..].starts_with(p.as_bytes()));
        let boundary = i == 0 || !(ident(bytes[i - 1]) || bytes[i - 1] == b':');
        let Some(_) = starts_path.filter(|_| boundary) else {
            i += 1;
            continue;
        };
        // Read `a::b::c`, and a following `{…}` group if any.
        let mut end = i;
        while end < bytes.len() && (ident(bytes[end]) || bytes[end] == b':') {
            end += 1;
        }
        let head: Vec<&str> = code[i..end].split("::").filter(|s| !s.is_empty()).collect();
        let mut base = here.clone();
        let mut rest = Vec::new();
        for (k, seg) in head.iter().enumerate() {
            match *seg {
                "crate" if k == 0 => base.clear(),
                "super" => {
                    base.pop();
                }
                "self" => {}
                s => rest.push(s.to_string()),
            }
        }
        let absolute = |tail: &[String]| base.iter().cloned().chain(tail.iter().cloned()).collect::<Vec<_>>();
        if end < bytes.len() && bytes[end] == b'{' {
            let close = code[end..].find('}').map(|c| end + c).unwrap_or(bytes.len());
            for item in code[end + 1..close].split(',') {
                let item: Vec<String> =
                    item.trim().split("::").map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                let mut path = rest.clone();
                path.extend(item.into_iter().take_while(|s| s.chars().all(|c| c.is_alphanumeric() || c == '_')));
                out.push(absolute(&path));
            }
            i = close;
        } else {
            out.push(absolute(&rest));
            i = end;
        }
    }
    out
}

/// The module a path names: its longest prefix that is a module.
fn resolve(path: &[String], modules: &BTreeMap<String, String>) -> String {
    (0..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| modules.contains_key(m)).unwrap_or_default()
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[w.as_str()].min(s.low[v]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w.as_str()) {
                let low = s.index[w.as_str()].min(s.low[v]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in &modules {
        let targets = edges.entry(module.clone()).or_default();
        for path in named_paths(module, code) {
            let target = resolve(&path, &modules);
            // A module naming one of its own descendants' items through its `mod` declarations
            // is how Rust spells a tree, not an import of the parent by the child.
            if &target != module && !target.is_empty() {
                targets.insert(target);
            }
        }
    }
    edges
}

#[test]
fn the_library_has_no_import_cycles() {
    let edges = import_graph();
    assert!(edges.len() > 30, "the walk found the crate's modules: {:?}", edges.keys());
    assert!(edges["pipeline::pass"].contains("denoise::scheduler"), "paths resolve to modules: {edges:?}");
    let found = cycles(&edges);
    assert!(found.is_empty(), "import cycles (each a set of modules that use one another): {found:#?}");
}

#[test]
fn lower_layers_do_not_reach_up() {
    // What each layer may not use: the layers above it (docs/ARCHITECTURE.md).
    let edges = import_graph();
    let rules: [(&str, &[&str]); 7] = [
        ("error", &["input", "pfv", "encoders", "denoise", "vae", "composite", "pipeline", "pack", "nn", "model"]),
        (
            "archive",
            &["input", "pfv", "encoders", "denoise", "vae", "composite", "pipeline", "pack", "nn", "model", "gpu"],
        ),
        ("nn", &["input", "pfv", "encoders", "denoise", "vae", "composite", "pipeline", "model"]),
        // Kernels sit under the layers: they know tensors and the GPU, nothing of the models.
        ("kernels", &["input", "pfv", "encoders", "denoise", "vae", "composite", "pipeline", "pack", "nn", "model"]),
        ("vae", &["denoise", "encoders", "pipeline", "model"]),
        ("input", &["pfv", "encoders", "denoise", "vae", "composite", "pipeline", "model", "nn"]),
        ("pfv", &["encoders", "denoise", "vae", "composite", "pipeline", "model", "nn"]),
    ];
    let under = |module: &str, top: &str| module == top || module.starts_with(&format!("{top}::"));
    for (layer, forbidden) in rules {
        for (module, targets) in edges.iter().filter(|(m, _)| under(m, layer)) {
            for target in targets {
                assert!(
                    !forbidden.iter().any(|f| under(target, f)),
                    "{module} uses {target}, a stage above it; move what both need down a layer"
                );
            }
        }
    }
}

#[test]
fn the_resolver_finds_what_a_use_names() {
    let module = "pipeline::denoise";
    let code = "use super::options::{Canvas, GenerateOptions};\nuse crate::nn::{attention::Attention, Linear};";
    let paths = named_paths(module, code);
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        joined,
        ["pipeline::options::Canvas", "pipeline::options::GenerateOptions", "nn::attention::Attention", "nn::Linear"]
    );
}

/// The training scripts' imports of one another (at the top or inside functions) have no cycles
/// either: `pack.py` may use `common.py` and `condition_decoder.py`, never the other way.
#[test]
fn the_training_scripts_have_no_import_cycles() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("training");
    let scripts: BTreeMap<String, String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    assert!(scripts.contains_key("common") && scripts.contains_key("pack"), "{:?}", scripts.keys());
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, text) in &scripts {
        let targets = edges.entry(name.clone()).or_default();
        for line in text.lines().map(|l| l.split('#').next().unwrap().trim()) {
            let imported = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["import", rest @ ..] => rest.join(" ").split(',').map(|m| m.trim().to_string()).collect(),
                ["from", module, "import", ..] => vec![module.to_string()],
                _ => vec![],
            };
            for module in imported {
                let module = module.split_whitespace().next().unwrap_or("").to_string();
                if scripts.contains_key(&module) && &module != name {
                    targets.insert(module);
                }
            }
        }
    }
    assert!(edges["pack"].contains("common"), "imports are read: {edges:?}");
    let found = cycles(&edges);
    assert!(found.is_empty(), "training scripts that import one another: {found:#?}");
}
