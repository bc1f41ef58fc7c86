//! The server's top-level modules form layers (ARCHITECTURE.md, "Layers"):
//! a module names only modules of lower layers, so there is no import cycle
//! and each can be read knowing only what is below it. Read from the source:
//! a new back-edge, or a module missing from the list, fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers as ARCHITECTURE.md lists them, lowest first.
fn layers() -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md")).unwrap();
    let block = doc.split("<!-- layers -->").nth(1).and_then(|b| b.split("<!-- /layers -->").next());
    let block = block.expect("ARCHITECTURE.md lists the layers between <!-- layers --> and <!-- /layers -->");
    block
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split('`').skip(1).step_by(2).map(String::from).collect())
        .collect()
}

/// The top-level modules each module's code names (`crate::x`), comments aside.
fn names() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".rs").to_string())
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    let mut files = vec![src.clone()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let rel = p.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        let owner = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
        if !modules.contains(&owner) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let code: String = text.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
        for chunk in code.split("crate::").skip(1) {
            // `crate::x::...` or `crate::{x, y::z}`.
            let named: Vec<&str> = match chunk.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap().split(',').map(|s| s.trim()).collect(),
                None => vec![chunk],
            };
            for n in named {
                let m: String = n.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if modules.contains(&m) && m != owner {
                    out.get_mut(&owner).unwrap().insert(m);
                }
            }
        }
    }
    out
}

#[test]
fn modules_name_only_lower_layers() {
    let layers = layers();
    let level: BTreeMap<&str, usize> =
        layers.iter().enumerate().flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i))).collect();
    let names = names();
    let unlisted: Vec<&String> = names.keys().filter(|m| !level.contains_key(m.as_str())).collect();
    assert!(unlisted.is_empty(), "modules missing from ARCHITECTURE.md's layers: {unlisted:?}");
    let mut wrong = Vec::new();
    for (m, named) in &names {
        for n in named {
            if level[n.as_str()] >= level[m.as_str()] {
                wrong.push(format!(
                    "{m} (layer {}) names {n} (layer {})",
                    level[m.as_str()] + 1,
                    level[n.as_str()] + 1
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "a module names one of its own layer or above:\n{}", wrong.join("\n"));
}

/// The reading sees edges written both ways (`crate::x::y`, `crate::{x, y}`),
/// so the test above cannot pass by reading nothing.
#[test]
fn the_reading_finds_known_edges() {
    let names = names();
    for (from, to) in [("engine", "shared"), ("http", "service"), ("cluster", "metrics"), ("store", "problem")] {
        assert!(names[from].contains(to), "{from} names {to}: {:?}", names[from]);
    }
}
