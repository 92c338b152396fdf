//! Rewrite rules, one file per family, each rule named `family-what`. A family's `rules()` lists
//! its rules as data (one aligned line per rule); conditions and appliers check shapes before
//! anything is added (see [`super::apply`]). No rule is blanket commutativity or associativity, and
//! every right-hand side is no worse than its left under the [cost model](super::cost).

pub mod algebra;
pub mod layout;
pub mod rope;

use super::analysis::KilnRewrite;
use std::fmt;

/// A family of rules, as `eqsat{rules=...}` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Fuse `rope` on q and k into the attention's `rope` attribute.
    Rope,
    /// Cancel and compose permutes and reshapes.
    Layout,
    /// Identities of arithmetic (`x*1`, `x+0`, `neg(neg x)`, ...) that hold exactly.
    Algebra,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Rope, Family::Layout, Family::Algebra];

    pub fn name(self) -> &'static str {
        match self {
            Family::Rope => "rope",
            Family::Layout => "layout",
            Family::Algebra => "algebra",
        }
    }

    /// A family by name; an unknown name is an error listing the valid ones.
    pub fn from_name(name: &str) -> Result<Family, String> {
        Family::ALL.iter().copied().find(|f| f.name() == name).ok_or_else(|| {
            let valid: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
            format!("unknown rule family '{name}' (valid families: {})", valid.join(", "))
        })
    }

    pub fn rules(self) -> Vec<KilnRewrite> {
        match self {
            Family::Rope => rope::rules(),
            Family::Layout => layout::rules(),
            Family::Algebra => algebra::rules(),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The rules of these families, in family order.
pub fn rules_for(families: &[Family]) -> Vec<KilnRewrite> {
    families.iter().flat_map(|f| f.rules()).collect()
}

/// Every rule of every family.
pub fn all_rules() -> Vec<KilnRewrite> {
    rules_for(&Family::ALL)
}

/// One rule by name, if some family has it.
pub fn rule(name: &str) -> Option<KilnRewrite> {
    all_rules().into_iter().find(|r| r.name.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_named_after_their_family_and_unique() {
        let mut names = Vec::new();
        for f in Family::ALL {
            for r in f.rules() {
                let name = r.name.to_string();
                assert!(name.starts_with(&format!("{}-", f.name())), "rule {name} is in family {f}");
                names.push(name);
            }
        }
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate rule names");
    }

    #[test]
    fn unknown_family_lists_the_valid_ones() {
        assert_eq!(Family::from_name("layout"), Ok(Family::Layout));
        assert_eq!(
            Family::from_name("fusion").unwrap_err(),
            "unknown rule family 'fusion' (valid families: rope, layout, algebra)"
        );
    }
}
