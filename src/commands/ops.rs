//! `kiln ops`: the op table — every op's operands, attributes and meaning — as text or JSON.

use anyhow::Result;
use clap::Args;
use kiln_ir::op::{OpKind, Operands};

#[derive(Args)]
pub struct OpsArgs {
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

fn operand_list(o: &Operands) -> Vec<String> {
    match o {
        Operands::Fixed(names) => names.iter().map(|s| s.to_string()).collect(),
        Operands::Variadic(name) => vec![format!("{name}...")],
        Operands::FixedThenVariadic(names, tail, _) => {
            names.iter().map(|s| s.to_string()).chain([format!("{tail}...")]).collect()
        }
    }
}

pub fn run(args: OpsArgs) -> Result<()> {
    let mut out = String::new();
    let mut rows = Vec::new();
    for op in OpKind::all() {
        let info = op.info();
        let operands = operand_list(&info.operands);
        let attrs: Vec<String> = info
            .attrs
            .iter()
            .map(|a| format!("{}{}: {}", a.name, if a.required { "" } else { "?" }, a.kind.describe()))
            .collect();
        if args.json {
            rows.push(serde_json::json!({
                "name": info.name, "operands": operands, "attrs": attrs,
                "declares_type": info.declares_type, "has_result": info.has_result, "doc": info.doc,
            }));
        } else {
            out.push_str(&format!("{}({})\n", info.name, operands.join(", ")));
            if !attrs.is_empty() {
                out.push_str(&format!("    attrs: {}\n", attrs.join("; ")));
            }
            out.push_str(&format!("    {}\n", info.doc));
        }
    }
    if args.json {
        out = serde_json::to_string_pretty(&rows)? + "\n";
    }
    crate::io::write_output(None, &out)
}
