//! Checks of the source layout that neither rustc nor clippy make: the agent's top-level
//! modules import each other without cycles (data flows one way), and no source file grows
//! past the size a reader can hold in mind without saying why.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// Lines a source file may have before its opening comment must say why it is longer.
const MAX_LINES: usize = 800;
/// The phrase that opening comment carries.
const LONG_FILE_MARK: &str = "Longer than";

/// Top-level module -> the top-level modules it refers to through `crate::` paths.
pub type ModuleGraph = BTreeMap<String, BTreeSet<String>>;

pub fn check(workspace: &Path) -> anyhow::Result<()> {
    let src = workspace.join("plugin/src");
    let graph = module_graph(&src)?;
    if let Some(cycle) = find_cycle(&graph) {
        bail!(
            "plugin/src: the modules import each other in a cycle: {}",
            cycle.join(" -> ")
        );
    }
    let mut long = Vec::new();
    for dir in ["plugin", "ebpf", "xtask", "e2e"] {
        for file in rust_files(&workspace.join(dir))? {
            let text = std::fs::read_to_string(&file)?;
            let lines = text.lines().count();
            let explained = text
                .lines()
                .take_while(|l| l.starts_with("//"))
                .any(|l| l.contains(LONG_FILE_MARK));
            if lines > MAX_LINES && !explained {
                long.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    if !long.is_empty() {
        bail!(
            "files over {MAX_LINES} lines whose opening comment does not say why (\"{LONG_FILE_MARK} ... because ...\"): {}",
            long.join(", ")
        );
    }
    eprintln!(
        "layout: {} modules, no import cycle; no file over {MAX_LINES} lines unexplained",
        graph.len()
    );
    Ok(())
}

fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                // Build output and the fuzzer's own workspace are not ours to size.
                if name != "target" && name != "fuzz" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The graph of `plugin/src`'s top-level modules (`main.rs` and `lib.rs` are the roots that
/// wire them and are left out).
pub fn module_graph(src: &Path) -> anyhow::Result<ModuleGraph> {
    let mut graph = ModuleGraph::new();
    for file in rust_files(src)? {
        let relative = file.strip_prefix(src)?;
        let top = match relative.components().next() {
            Some(c) => c
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string(),
            None => continue,
        };
        if matches!(top.as_str(), "main" | "lib" | "bin") {
            continue;
        }
        let text = std::fs::read_to_string(&file)?;
        let used = graph.entry(top.clone()).or_default();
        for module in crate_references(&text) {
            if module != top {
                used.insert(module);
            }
        }
    }
    Ok(graph)
}

/// The first segment of every `crate::` path in Rust source, comments left out:
/// `use crate::{a::b, c}` gives a and c.
pub fn crate_references(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        // `$crate::` and `sysflow_crate::` are not ours.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            let mut at_item_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        at_item_start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 && at_item_start {
                    if c.is_alphanumeric() || c == '_' {
                        item.push(c);
                        continue;
                    }
                    if !item.is_empty() {
                        found.insert(std::mem::take(&mut item));
                        at_item_start = false;
                    }
                }
            }
            if !item.is_empty() {
                found.insert(item);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// A cycle in the graph, as the modules along it (the first repeated at the end).
pub fn find_cycle(graph: &ModuleGraph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &ModuleGraph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_from_use_groups_and_paths() {
        let text = "use crate::{\n    capture::CaptureMode,\n    probe::{Probe, records::Record},\n};\n\
                    // crate::commented::Out\nlet x = crate::metrics::names::X;\nuse $crate::macro_only;\n";
        let found: Vec<String> = crate_references(text).into_iter().collect();
        assert_eq!(found, ["capture", "metrics", "probe"]);
    }

    #[test]
    fn a_cycle_is_named_along_its_path() {
        let mut graph = ModuleGraph::new();
        graph
            .entry("agent".into())
            .or_default()
            .insert("policy".into());
        graph
            .entry("policy".into())
            .or_default()
            .insert("state".into());
        graph
            .entry("state".into())
            .or_default()
            .insert("agent".into());
        graph.entry("probe".into()).or_default();
        assert_eq!(
            find_cycle(&graph).unwrap(),
            ["agent", "policy", "state", "agent"]
        );
        graph.get_mut("state").unwrap().clear();
        assert_eq!(find_cycle(&graph), None);
    }
}
