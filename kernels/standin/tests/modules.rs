//! The stand-in's modules import downward only: no two of them import each other, directly or
//! around a circle. Imports are read from the sources (`crate::x` paths, `use crate::{a, b}`
//! groups, and the crate root's `pub use x::*`); a name that is not a module of `src/` is an item
//! of the crate root (`lib.rs`). Comments are skipped, so doc links do not count.

use std::collections::{BTreeMap, BTreeSet};

/// Module name -> the modules it imports (`lib` is the crate root).
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level names a line imports from the crate: `crate::a::..`, `$crate::a`, and each
/// entry of `crate::{a, b::c}`.
fn crate_names(line: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for entry in inner.split(',') {
                let head = entry.trim().split("::").next().unwrap_or("").trim();
                if !head.is_empty() {
                    names.push(head.to_string());
                }
            }
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !ident.is_empty() {
                names.push(ident);
            }
        }
    }
    names
}

/// The import graph of `files` (module name, source); `lib` is the root.
fn graph(files: &[(String, String)]) -> Graph {
    let modules: BTreeSet<&str> = files.iter().map(|(m, _)| m.as_str()).collect();
    let mut g = Graph::new();
    for (module, source) in files {
        let edges = g.entry(module.clone()).or_default();
        for line in source.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut names = crate_names(code);
            // The root re-exports modules with `pub use x::*`.
            if module == "lib" {
                if let Some(path) = code.trim().strip_prefix("pub use ") {
                    names.push(path.split("::").next().unwrap_or("").to_string());
                }
            }
            for name in names {
                let target = if modules.contains(name.as_str()) {
                    name
                } else {
                    "lib".to_string()
                };
                if &target != module {
                    edges.insert(target);
                }
            }
        }
    }
    g
}

/// A circle of imports, if there is one: the modules along it, first repeated at the end.
fn find_circle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut circle = path[i..].to_vec();
            circle.push(m.to_string());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
}

fn sources() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("src/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("source"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn no_two_modules_import_each_other_directly_or_around_a_circle() {
    let files = sources();
    assert!(files.len() >= 10, "found only {} modules", files.len());
    let g = graph(&files);
    // The reader sees the direction: state below, work above it, entry points on top.
    assert!(g["exec"].contains("driver") && g["exec"].contains("ops"));
    assert!(g["driver"].contains("ops"));
    assert!(g["lib"].contains("api_stream"));
    if let Some(circle) = find_circle(&g) {
        panic!("import circle: {}\nthe graph: {g:#?}", circle.join(" -> "));
    }
}

#[test]
fn the_check_finds_planted_circles_through_any_kind_of_import() {
    let file = |m: &str, s: &str| (m.to_string(), s.to_string());
    // Two modules (the shape this crate had: driver and exec).
    let two = [
        file("lib", "mod a;\nmod b;\n"),
        file("a", "use crate::b::Thing;\n"),
        file("b", "use crate::{a::Other, status::*};\n"),
        file("status", ""),
    ];
    let circle = find_circle(&graph(&two)).expect("a <-> b");
    assert_eq!(circle.len(), 3, "{circle:?}");
    // Through the crate root: the root re-exports a module that uses a root item.
    let root = [
        file("lib", "pub use api::*;\npub fn helper() {}\n"),
        file("api", "fn f() { crate::helper(); }\n"),
    ];
    assert!(find_circle(&graph(&root)).is_some());
    // Three modules around, one of them only in a macro's `$crate::` path.
    let three = [
        file("lib", ""),
        file("x", "use crate::y;\n"),
        file("y", "    $crate::z::go()\n"),
        file("z", "use crate::{status, x::X};\n"),
        file("status", ""),
    ];
    assert_eq!(find_circle(&graph(&three)).expect("x y z").len(), 4);
    // Comments and downward imports are no circle.
    let clean = [
        file("lib", "pub use a::*;\n"),
        file("a", "use crate::b; // crate::a is fine in a comment\n"),
        file("b", "/// see [`crate::a`]\nfn g() {}\n"),
    ];
    assert_eq!(find_circle(&graph(&clean)), None);
}
