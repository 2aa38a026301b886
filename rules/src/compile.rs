//! Loading: config file + rule files → [`Plan`], with every diagnostic collected.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gridwatch_engine::Plan;

use crate::config::{Config, parse_config};
use crate::diagnostic::{Code, Diagnostic, Diagnostics, Source};
use crate::expr::ExprPlanner;
use crate::rule::compile_rule;
use crate::yaml::{self, Kind, Node, Reader};

/// The result of loading: a plan when there were no errors, and the diagnostics.
#[derive(Debug)]
pub struct Loaded {
    /// The config, if it could be read.
    pub config: Option<Config>,
    /// The compiled plan (complete only when `diagnostics` is empty).
    pub plan: Plan,
    /// Every problem found, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// Rule files that were read.
    pub rule_files: Vec<PathBuf>,
}

impl Loaded {
    /// The plan, or all diagnostics rendered as one error text.
    pub fn into_result(self) -> Result<(Config, Plan), String> {
        if !self.diagnostics.is_empty() || self.config.is_none() {
            return Err(render_all(&self.diagnostics));
        }
        Ok((self.config.expect("checked above"), self.plan))
    }
}

/// Renders diagnostics followed by a count line.
pub fn render_all(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    out.push_str(&format!("{} error{} found", diags.len(), if diags.len() == 1 { "" } else { "s" }));
    out
}

fn read_source(path: &Path, diags: &mut Diagnostics) -> Option<Arc<Source>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(Arc::new(Source::new(path, text))),
        Err(e) => {
            diags.push(
                Diagnostic::global(Code::Io, format!("cannot read `{}`: {e}", path.display()))
                    .with_hint("check the path; relative rule paths are resolved against the config file's directory"),
            );
            None
        }
    }
}

/// Expands files and directories (their `*.yaml`/`*.yml`, recursively, sorted). Each file
/// is loaded once, however many paths or symlinks lead to it; a directory reached again
/// through a symlink inside itself (a loop) is reported and not followed.
pub fn expand_rule_paths(paths: &[PathBuf], diags: &mut Diagnostics) -> Vec<PathBuf> {
    let mut walk = Walk::default();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk.collect_yaml(p, &mut found, diags);
            found.sort();
            walk.keep_new(found);
        } else if p.exists() {
            walk.keep_new(vec![p.clone()]);
        } else {
            diags.push(Diagnostic::global(Code::Io, format!("rule path `{}` does not exist", p.display())));
        }
    }
    walk.out
}

/// The state of one expansion: what was loaded and which directories are open.
#[derive(Default)]
struct Walk {
    out: Vec<PathBuf>,
    /// Canonical paths of the files taken.
    files: std::collections::HashSet<PathBuf>,
    /// Canonical paths of the directories read (each is read once).
    dirs: std::collections::HashSet<PathBuf>,
    /// Canonical paths of the directories being read, outermost first.
    open: Vec<PathBuf>,
}

impl Walk {
    fn keep_new(&mut self, found: Vec<PathBuf>) {
        for p in found {
            let canon = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            if self.files.insert(canon) {
                self.out.push(p);
            }
        }
    }

    fn collect_yaml(&mut self, dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Diagnostics) {
        let Ok(canon) = std::fs::canonicalize(dir) else { return };
        if self.open.contains(&canon) {
            diags.push(
                Diagnostic::global(
                    Code::Io,
                    format!(
                        "`{}` leads back to `{}`, which contains it: a symlink loop",
                        dir.display(),
                        canon.display()
                    ),
                )
                .with_hint("remove the symlink; the directory's rules are loaded once without it"),
            );
            return;
        }
        if !self.dirs.insert(canon.clone()) {
            return; // reached again through another link: already loaded
        }
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        self.open.push(canon);
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                self.collect_yaml(&p, out, diags);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
        self.open.pop();
    }
}

/// True when a YAML file looks like a service config (it has top-level `streams`).
pub fn is_config_file(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    text.lines().any(|l| l.starts_with("streams:"))
}

/// Loads a config and the rule files it names.
pub fn load_config(path: &Path) -> Loaded {
    load(path, None)
}

/// Loads a config's streams but validates `rule_paths` instead of the rules it names.
pub fn load_rules_only(config_path: &Path, rule_paths: &[PathBuf]) -> Loaded {
    load(config_path, Some(rule_paths))
}

/// Compiles a config and rule documents given as text (for embedding, tests and
/// benchmarks); `rules` are (name, text) pairs, the names used in diagnostics. Rule paths
/// named by the config itself are ignored.
pub fn load_from_strings(config_name: &str, config: &str, rules: &[(&str, &str)]) -> Loaded {
    let src = Arc::new(Source::new(config_name, config));
    let sources = rules.iter().map(|(name, text)| Arc::new(Source::new(*name, *text))).collect();
    load_sources(Path::new(config_name), Some(src), false, |_| sources)
}

fn load(path: &Path, rule_override: Option<&[PathBuf]>) -> Loaded {
    let mut diags = Diagnostics::default();
    let src = read_source(path, &mut diags);
    let mut loaded = load_sources(path, src, rule_override.is_none(), |config| {
        let rule_paths = rule_override.map_or_else(|| config.rule_paths.clone(), <[PathBuf]>::to_vec);
        let files = expand_rule_paths(&rule_paths, &mut diags);
        files.iter().filter_map(|f| read_source(f, &mut diags)).collect()
    });
    let mut all = Diagnostics::default();
    for d in diags.into_sorted().into_iter().chain(std::mem::take(&mut loaded.diagnostics)) {
        all.push(d);
    }
    loaded.diagnostics = all.into_sorted();
    loaded
}

/// Parses the config from `src`, asks `rule_sources` for the rule files, compiles them.
/// `own_rules`: the rules are the config's own, so rule ids named in `cases:` must exist
/// among them (a rule pack checked or benchmarked against the config is another set).
fn load_sources(
    path: &Path,
    src: Option<Arc<Source>>,
    own_rules: bool,
    rule_sources: impl FnOnce(&Config) -> Vec<Arc<Source>>,
) -> Loaded {
    let mut diags = Diagnostics::default();
    let mut loaded = Loaded { config: None, plan: Plan::default(), diagnostics: Vec::new(), rule_files: Vec::new() };
    let Some(src) = src else { return loaded };
    let reader = Reader { source: src.clone() };
    let config = match yaml::parse(&src) {
        Ok(root) => parse_config(path, &root, &reader, &mut diags),
        Err(d) => {
            diags.push(d);
            loaded.diagnostics = diags.into_sorted();
            return loaded;
        }
    };
    let sources = rule_sources(&config);
    let planner = ExprPlanner::default();
    let mut seen: HashMap<String, (Arc<Source>, crate::diagnostic::Pos)> = HashMap::new();
    let mut rules = Vec::new();
    for src in &sources {
        let r = Reader { source: src.clone() };
        let root = match yaml::parse(src) {
            Ok(n) => n,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        for node in rule_nodes(&root, &r, &mut diags) {
            let Some(compiled) = compile_rule(node, &r, &config.streams, &config.zones, &planner, &mut diags) else {
                continue;
            };
            let id = compiled.plan.meta.id.to_string();
            if let Some((first_src, first_pos)) = seen.get(&id) {
                let first = if first_src.path == src.path {
                    format!("line {}, column {}", first_pos.line, first_pos.col)
                } else {
                    format!("{}:{}:{}", first_src.path.display(), first_pos.line, first_pos.col)
                };
                diags.push(
                    r.error(Code::DuplicateId, &compiled.id_node, format!("duplicate rule id `{id}`"))
                        .with_hint(format!("first defined at {first}; rule ids must be unique")),
                );
                continue;
            }
            seen.insert(id, (src.clone(), compiled.id_node.pos));
            rules.push(Arc::new(compiled.plan));
        }
    }
    if let Some(cases) = config.cases.as_ref().filter(|_| own_rules) {
        let ids: Vec<&str> = rules.iter().map(|r| &*r.meta.id).collect();
        for (id, node) in &cases.rule_refs {
            if !ids.contains(&id.as_str()) {
                let d = reader.error(Code::BadValue, node, format!("`cases` names unknown rule `{id}`"));
                diags.push(if ids.is_empty() {
                    d.with_hint("no rules are loaded: check the config's `rules:` paths")
                } else {
                    d.suggest(id, &ids, "rules")
                });
            }
        }
    }
    loaded.plan = Plan { streams: config.streams.clone(), rules };
    loaded.config = Some(config);
    loaded.rule_files = sources.iter().map(|s| s.path.clone()).collect();
    loaded.diagnostics = diags.into_sorted();
    loaded
}

/// The rule mappings of a rule file: `rules: [...]` or a bare list.
fn rule_nodes<'a>(root: &'a Node, r: &Reader, diags: &mut Diagnostics) -> Vec<&'a Node> {
    let list = match &root.kind {
        Kind::Seq(items) => items,
        Kind::Map(_) => match r.map(root, "a rule file", &["rules"], diags).and_then(|m| m.get("rules")) {
            Some(Node { kind: Kind::Seq(items), .. }) => items,
            Some(other) => {
                diags.push(r.error(
                    Code::WrongType,
                    other,
                    format!("`rules` must be a list, found {}", other.kind.describe()),
                ));
                return Vec::new();
            }
            None => return Vec::new(),
        },
        Kind::Null => return Vec::new(),
        other => {
            diags.push(r.error(
                Code::WrongType,
                root,
                format!("a rule file must hold `rules:` with a list, found {}", other.describe()),
            ));
            return Vec::new();
        }
    };
    list.iter().collect()
}

#[cfg(test)]
mod walk_tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_reported_once_and_every_file_is_loaded_once() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(rules.join("sub")).unwrap();
        std::fs::write(rules.join("a.yaml"), "rules: []\n").unwrap();
        std::fs::write(rules.join("sub/b.yaml"), "rules: []\n").unwrap();
        // Two loops (to the root and to itself) and a second way to the same directory.
        std::os::unix::fs::symlink(&rules, rules.join("sub/back")).unwrap();
        std::os::unix::fs::symlink(rules.join("sub"), rules.join("sub/self")).unwrap();
        std::os::unix::fs::symlink(rules.join("sub"), rules.join("again")).unwrap();
        let mut diags = Diagnostics::default();
        let files = expand_rule_paths(&[rules.clone(), rules.join("a.yaml")], &mut diags);
        let names: Vec<String> = files.iter().map(|p| p.strip_prefix(&rules).unwrap().display().to_string()).collect();
        assert_eq!(names, ["a.yaml", "again/b.yaml"], "each file once");
        let errors: Vec<String> = diags.into_sorted().into_iter().map(|d| d.message).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|e| e.contains("a symlink loop")), "{errors:?}");
    }
}
