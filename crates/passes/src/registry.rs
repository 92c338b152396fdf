//! The pass registry: every pass a pipeline string can name, in one table. Adding a pass is one row
//! in [`REGISTRY`] (kept sorted by name) pointing at the pass's `create` function.
//!
//! A constructor validates its options (typically with [`PassOptions::check_known`] over the same
//! names the row lists, then the typed getters), so the row's `options` are documentation that a test
//! keeps in step with what the constructor accepts.

use crate::pass::{Pass, PassOptions};
use crate::passes;

/// Builds a pass from the options a pipeline string gives it; `Err` names the bad option.
pub type Constructor = fn(&PassOptions) -> Result<Box<dyn Pass>, String>;

/// One registered pass.
pub struct PassEntry {
    /// The name pipelines use (`cse`, `const-fold`).
    pub name: &'static str,
    /// One line for `--help`-style listings.
    pub description: &'static str,
    /// The option keys the pass accepts.
    pub options: &'static [&'static str],
    /// The ones it cannot do without (`gqa` needs `groups`); empty for passes that run with defaults.
    pub required: &'static [&'static str],
    pub create: Constructor,
}

impl std::fmt::Debug for PassEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassEntry").field("name", &self.name).field("options", &self.options).finish()
    }
}

/// Every pass, sorted by name.
#[rustfmt::skip]
pub const REGISTRY: &[PassEntry] = &[
    PassEntry { name: "canonicalize",      options: &[], required: &[],              create: passes::canonicalize::create,
                description: "Normalize attributes to canonical forms and fold trivial identities (x*1, reshape to the same shape, double neg, ...)" },
    PassEntry { name: "const-fold",        options: &["max-elements"], required: &[], create: passes::const_fold::create,
                description: "Evaluate subgraphs of constants with the reference interpreter and replace splat results with a constant" },
    PassEntry { name: "cse",               options: &[], required: &[],              create: passes::cse::create,
                description: "Merge nodes with the same op, attributes, operands and type (hash-consing)" },
    PassEntry { name: "dce",               options: &[], required: &[],              create: passes::dce::create,
                description: "Remove nodes no output depends on" },
    PassEntry { name: "eqsat",             options: &["rules", "node-limit", "iter-limit", "time-limit"], required: &[], create: passes::eqsat::create,
                description: "Equality saturation with egg over the chosen rule families, extracting the cheapest graph" },
    PassEntry { name: "expand-kv",         options: &[], required: &[],              create: passes::gqa::create_expand_kv,
                description: "Give every query head its own key/value head by repeating the shared ones (GQA/MQA → MHA; exact)" },
    PassEntry { name: "fuse-elementwise",  options: &[], required: &[],              create: passes::fuse_elementwise::create,
                description: "Fuse chains of elementwise ops into one `fused` op" },
    PassEntry { name: "gqa",               options: &["groups"], required: &["groups"], create: passes::gqa::create_gqa,
                description: "Convert attention to N key/value groups by mean-pooling K/V projection heads (GQA, arXiv 2305.13245; N=1 is MQA)" },
    PassEntry { name: "merge-projections", options: &[], required: &[],              create: passes::merge_projections::create,
                description: "Merge matmuls that share an input (q/k/v, gate/up) into one wider matmul" },
    PassEntry { name: "mod",               options: &["capacity", "keep-first", "layers", "routers"], required: &["routers"], create: passes::mixture_of_depths::create,
                description: "Mixture-of-Depths routing (arXiv 2404.02258) with calibrated routers: only the top capacity fraction of tokens enter the chosen blocks" },
    PassEntry { name: "moe-dispatch",      options: &[], required: &[],              create: passes::moe_dispatch::create,
                description: "Lower each moe op into explicit route → dispatch → per-expert FFN → weighted combine ops (arXiv 1701.06538)" },
    PassEntry { name: "moefy",             options: &["experts", "top-k"], required: &[], create: passes::moefy::create,
                description: "Split each dense FFN into an MoE by balanced clustering of its neurons, with a router derived from the clusters" },
];

/// The entry for a pass name.
pub fn lookup(name: &str) -> Option<&'static PassEntry> {
    REGISTRY.iter().find(|e| e.name == name)
}

/// Every registered pass name, in table order.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// Creates a pass by name; an unknown name is an error listing the valid ones.
pub fn create(name: &str, options: &PassOptions) -> Result<Box<dyn Pass>, String> {
    let entry = lookup(name).ok_or_else(|| format!("unknown pass '{name}' (valid passes: {})", names().join(", ")))?;
    (entry.create)(options)
}

/// The registered name closest to `name` (by edit distance, at most 2 edits), for "did you mean".
pub fn suggest(name: &str) -> Option<&'static str> {
    REGISTRY.iter().map(|e| (edit_distance(name, e.name), e.name)).filter(|(d, _)| *d <= 2).min().map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut prev = row[0];
        row[0] = i;
        for j in 1..=b.len() {
            let cur = row[j];
            row[j] = (row[j] + 1).min(row[j - 1] + 1).min(prev + usize::from(a[i - 1] != b[j - 1]));
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_names_unique() {
        let names = names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn each_entry_builds_with_defaults_and_names_itself() {
        for e in REGISTRY {
            if !e.required.is_empty() {
                let err =
                    (e.create)(&PassOptions::default()).err().unwrap_or_else(|| panic!("{} needs options", e.name));
                assert!(
                    e.required.iter().any(|r| err.contains(r)),
                    "{}: error names no required option: {err}",
                    e.name
                );
                continue;
            }
            let p = (e.create)(&PassOptions::default()).unwrap_or_else(|m| panic!("{}: {m}", e.name));
            assert_eq!(p.name(), e.name);
            assert!(p.options().is_empty(), "{}: default options print as nothing", e.name);
        }
    }

    /// The listed options are exactly the ones the constructor does not call unknown.
    #[test]
    fn listed_options_match_the_constructors() {
        for e in REGISTRY {
            let bogus = PassOptions([("no-such-option".to_string(), "1".to_string())].into());
            let err = (e.create)(&bogus).err().unwrap_or_else(|| panic!("{} accepted an unknown option", e.name));
            assert!(err.contains("unknown option 'no-such-option'"), "{}: {err}", e.name);
            for k in e.options {
                let o = PassOptions([(k.to_string(), "§".to_string())].into());
                if let Err(err) = (e.create)(&o) {
                    assert!(!err.contains("unknown option"), "{}: option {k} is listed but rejected: {err}", e.name);
                }
            }
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("csee"), Some("cse"));
        assert_eq!(suggest("canonicalise"), Some("canonicalize"));
        assert_eq!(suggest("zzzzzz"), None);
        assert!(create("nope", &PassOptions::default()).err().unwrap().contains("valid passes: canonicalize,"));
    }
}
