//! `eqsat{rules=rope+layout+algebra,node-limit=N,iter-limit=N,time-limit=2s}`: equality saturation
//! with egg over the chosen rule families, per layer, extracting the cheapest graph (see
//! [`crate::egraph`] and `docs/eqsat.md`).
//!
//! Options (defaults print as nothing):
//! - `rules`: `+`-separated families (`rope`, `layout`, `algebra`); default all three.
//! - `node-limit`: e-nodes per region e-graph (default 10000).
//! - `iter-limit`: iterations per region (default 30).
//! - `time-limit`: wall time for the whole graph, `2s` or `500ms` (default 2s); regions left when
//!   it is spent are not rewritten.
//!
//! Statistics: `regions`, `changed_regions`, `skipped_regions`, `stop_reasons` (egg's
//! `StopReason` per region), `iterations`, `egraph_nodes`, `egraph_classes`, `max_egraph_nodes`,
//! `applied` (per rule), `cost_before`, `cost_after`, `time_ms`.

use crate::egraph::{rules, saturate, EqsatConfig, Family, KilnRewrite, Limits};
use crate::pass::{Changed, Pass, PassCx, PassError, PassOptions};
use kiln_ir::Graph;
use std::time::Duration;

pub const NAME: &str = "eqsat";
pub const OPTIONS: &[&str] = &["rules", "node-limit", "iter-limit", "time-limit"];

pub struct Eqsat {
    families: Vec<Family>,
    config: EqsatConfig,
    rules: Vec<KilnRewrite>,
}

impl Eqsat {
    pub fn new(families: Vec<Family>, config: EqsatConfig) -> Eqsat {
        let rules = rules::rules_for(&families);
        Eqsat { families, config, rules }
    }

    pub fn families(&self) -> &[Family] {
        &self.families
    }

    pub fn config(&self) -> &EqsatConfig {
        &self.config
    }
}

impl Default for Eqsat {
    fn default() -> Eqsat {
        Eqsat::new(Family::ALL.to_vec(), EqsatConfig::default())
    }
}

/// Builds the pass from pipeline options; errors name the bad option or the unknown family.
pub fn create(opts: &PassOptions) -> Result<Box<dyn Pass>, String> {
    opts.check_known(NAME, OPTIONS)?;
    let families = match opts.list("rules") {
        None => Family::ALL.to_vec(),
        Some(names) => {
            let mut fs: Vec<Family> = Vec::new();
            for n in names {
                let f = Family::from_name(n)?;
                if !fs.contains(&f) {
                    fs.push(f);
                }
            }
            if fs.is_empty() {
                return Err("option 'rules' names no rule family (valid families: rope, layout, algebra)".into());
            }
            fs
        }
    };
    let d = Limits::default();
    let limits = Limits {
        node_limit: opts.usize("node-limit", d.node_limit)?,
        iter_limit: opts.usize("iter-limit", d.iter_limit)?,
        time_limit: opts.duration("time-limit", d.time_limit)?,
    };
    if limits.node_limit == 0 || limits.iter_limit == 0 {
        return Err("options 'node-limit' and 'iter-limit' must be at least 1".into());
    }
    Ok(Box::new(Eqsat::new(families, EqsatConfig { limits, ..EqsatConfig::default() })))
}

/// `2s`, `500ms`, or seconds with a fraction (`0.0005s`), as [`PassOptions::duration`] reads.
// `%` rather than `is_multiple_of` (Rust 1.87): the workspace's MSRV is 1.80.
#[allow(clippy::manual_is_multiple_of)]
fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

impl Pass for Eqsat {
    fn name(&self) -> &'static str {
        NAME
    }

    fn options(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut sorted = self.families.clone();
        sorted.sort();
        if sorted != Family::ALL {
            let names: Vec<&str> = self.families.iter().map(|f| f.name()).collect();
            out.push(("rules".to_string(), names.join("+")));
        }
        let (l, d) = (&self.config.limits, Limits::default());
        if l.node_limit != d.node_limit {
            out.push(("node-limit".to_string(), l.node_limit.to_string()));
        }
        if l.iter_limit != d.iter_limit {
            out.push(("iter-limit".to_string(), l.iter_limit.to_string()));
        }
        if l.time_limit != d.time_limit {
            out.push(("time-limit".to_string(), format_duration(l.time_limit)));
        }
        out
    }

    fn run(&self, graph: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let report = saturate(graph, &self.rules, &self.config).map_err(|m| PassError::new(NAME, m))?;
        report.record(cx, NAME);
        Ok(Changed::from_bool(report.changed_regions > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> PassOptions {
        PassOptions(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_print_as_nothing_and_options_round_trip() {
        assert!(create(&PassOptions::default()).unwrap().options().is_empty());
        assert!(create(&opts(&[("rules", "algebra+rope+layout")])).unwrap().options().is_empty());
        for kv in [
            &[("rules", "rope+layout")][..],
            &[("rules", "layout"), ("node-limit", "100000"), ("iter-limit", "5"), ("time-limit", "500ms")][..],
            &[("time-limit", "3s")][..],
            &[("time-limit", "0.0005s")][..],
        ] {
            let p = create(&opts(kv)).unwrap();
            let printed = p.options();
            let again = create(&PassOptions(printed.iter().cloned().collect())).unwrap();
            assert_eq!(again.options(), printed);
            let want: Vec<(String, String)> = kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            assert_eq!(printed, want);
        }
    }

    #[test]
    fn bad_options_are_errors() {
        let e = create(&opts(&[("rules", "rope+fusion")])).err().unwrap();
        assert_eq!(e, "unknown rule family 'fusion' (valid families: rope, layout, algebra)");
        let e = create(&opts(&[("depth", "3")])).err().unwrap();
        assert!(e.contains("unknown option 'depth' for pass 'eqsat'"), "{e}");
        assert!(create(&opts(&[("node-limit", "many")])).err().unwrap().contains("node-limit"));
        assert!(create(&opts(&[("time-limit", "2h")])).err().unwrap().contains("time-limit"));
        assert!(create(&opts(&[("iter-limit", "0")])).is_err());
    }
}
