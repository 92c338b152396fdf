//! Fuzzes the text-form parser: any UTF-8 input must parse or fail with an error located inside
//! the input — never panic — and every graph that parses must print to text that parses back to
//! the same graph and the same text (`print ∘ parse` is a fixed point after one step).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    match kiln_ir::parse(src) {
        Err(e) => {
            // 1-based, within the input; the column may sit one past the end of its line.
            let lines: Vec<&str> = src.split('\n').collect();
            assert!(e.line >= 1 && e.line <= lines.len(), "line out of range: {e}");
            let len = lines[e.line - 1].chars().count();
            assert!(e.col >= 1 && e.col <= len + 1, "column out of range: {e}");
        }
        Ok(g) => {
            let _ = kiln_ir::verify_all(&g);
            let _ = kiln_ir::to_json(&g);
            let _ = kiln_ir::to_dot(&g);
            let text = kiln_ir::print(&g);
            let g2 = kiln_ir::parse(&text).unwrap_or_else(|e| panic!("printed graph does not parse: {e}\n{text}"));
            assert_eq!(kiln_ir::print(&g2), text, "print(parse(print(g))) != print(g)");
            assert!(g2.same_as(&g), "re-parsed graph differs:\n{text}");
        }
    }
});
