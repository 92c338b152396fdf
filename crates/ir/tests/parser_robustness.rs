//! Parser robustness: a deterministic corpus of mutated `.kir` inputs (seeded, so CI failures
//! reproduce) fed to `kiln_ir::parse`. For every input:
//!   - nothing panics (parse, and on success verify_all / print / re-parse),
//!   - every error has a 1-based line and column that lie within the input (the column may point
//!     one past the end of its line, where an end-of-line or end-of-input token sits),
//!   - every graph that parses prints to text that parses back to the same graph and text.
//!
//! The corpus starts from every `tests/fixtures/*.kir` and `tests/fixtures/bad/*.kir` and applies
//! byte flips, span deletions, insertions of punctuation / keywords / huge numbers / random UTF-8,
//! duplicated and swapped lines, truncation at every Nth byte, and stacks of several of these; plus
//! random token soup in the shape of a graph. `KILN_ROBUSTNESS_SCALE=N` multiplies the number of
//! random mutations (default 1).

mod support;

use kiln_ir::{parse, print, verify_all, Graph, ParseError};
use std::panic::{catch_unwind, AssertUnwindSafe};
use support::{fixtures_dir, kir_files, Rng};

const PUNCT: &[&str] =
    &["{", "}", "[", "]", "(", ")", ",", "=", ":", "+", "-", "*", "%", "@", "\"", "/", "//", "\\", "\n", " "];

const WORDS: &[&str] = &[
    "graph",
    "input",
    "param",
    "constant",
    "output",
    "add",
    "matmul",
    "rope",
    "attention",
    "moe",
    "reshape",
    "split",
    "slice",
    "concat",
    "softmax",
    "rms_norm",
    "layer_norm",
    "top_k",
    "gather",
    "embedding",
    "cast",
    "name",
    "eps",
    "axis",
    "axes",
    "shape",
    "perm",
    "sizes",
    "index",
    "start",
    "end",
    "dtype",
    "layout",
    "theta",
    "dim",
    "scaling",
    "neox",
    "interleaved",
    "llama3",
    "yarn",
    "linear",
    "factor",
    "causal",
    "window",
    "cache",
    "transpose_b",
    "keepdim",
    "true",
    "false",
    "inf",
    "NaN",
    "nan",
    "f32",
    "bf16",
    "i32",
    "i64",
    "bool",
    "q4_k",
    "q8_0",
    "T",
    "P",
    "experts",
    "top_k",
    "activation",
    "silu",
    "approx",
    "tanh",
];

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "00",
    "1.",
    "1.5",
    ".5",
    "1e",
    "1e+",
    "1e-5",
    "1E300",
    "1e999",
    "-1e999",
    "1e-999",
    "0.0000000000000000000000001",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999",
    "4294967296",
    "%18446744073709551615",
    "%18446744073709551616",
    "%99999999999999999999",
    "%",
    "%-1",
    "9223372036854775807*T",
    "-9223372036854775808*T",
    "T+9223372036854775807",
    "2*T-1",
];

const SNIPPETS: &[&str] = &[
    "  %99 = add %0, %0 : f32[T,576]\n",
    "  %0 = input {name = \"dup\"} : f32[4]\n",
    "  output %0 {name = \"y\"}\n",
    "  %1 = reshape %0 {shape = [9223372036854775807,9223372036854775807]} : f32[1]\n",
    "  %1 = concat %0, %0 {axis = 0} : f32[9223372036854775807]\n",
    "  %1 = split %0 {axis = 0, sizes = [9223372036854775807, 9223372036854775807], index = 0} : f32[4]\n",
    "  %1 = slice %0 {axis = 0, start = -9223372036854775808, end = 9223372036854775807} : f32[4]\n",
    "  %1 = input {name = \"q\"} : f32[-9223372036854775808,T-9223372036854775808]\n",
    "  %1 = moe %0, %0, %0, %0, %0 {experts = 6148914691236517206, top_k = 1, activation = silu} : f32[4,4]\n",
    "  %1 = top_k %0 {k = 9223372036854775807} : i32[4]\n",
    "  %1 = attention %0, %0, %0, %0 {rope = neox{theta = 1e999, dim = -9223372036854775808}} : f32[T,1,2]\n",
    "graph @\"\\u{10FFFF}\\u{0}\\\"\" {\n",
    "\"\\u{D800}\"",
    "\"\\u{110000}\"",
    "\"\\u{}\"",
    "\"\\u{1234567}\"",
    "\"\\q\"",
    "\"unterminated",
    "// a comment } {\n",
    "@",
    "@\"",
    "}\n}\n",
    "graph @g {\n}\n",
];

/// Whole statements with fresh value numbers (the fixtures' `%0` is always an input), inserted
/// between lines of a graph so that they reach the result-type rules rather than a syntax error.
/// Several used to overflow `i64` arithmetic and panic in debug builds.
const STATEMENTS: &[&str] = &[
    "%9000 = input {name = \"fz0\"} : f32[9223372036854775807]\n  %9001 = concat %9000, %9000 {axis = 0} : f32[1]",
    "%9000 = input {name = \"fz0\"} : f32[4294967296,4294967296]\n  %9001 = reshape %9000 {shape = [1]} : f32[1]",
    "%9000 = input {name = \"fz0\"} : f32[4]\n  %9001 = split %9000 {axis = 0, sizes = [9223372036854775807, 1], index = 0} : f32[4]",
    "%9000 = input {name = \"fz0\"} : f32[4,4]\n  %9001 = moe %9000, %9000, %9000, %9000, %9000 {experts = 4611686018427387904, top_k = 1, activation = silu} : f32[4,4]",
    "%9000 = input {name = \"fz0\"} : f32[-5]\n  %9001 = slice %9000 {axis = 0, start = -9223372036854775807} : f32[1]",
    "%9000 = input {name = \"fz0\"} : f32[T]\n  %9001 = slice %9000 {axis = 0, start = -9223372036854775808} : f32[T]",
    "%9000 = input {name = \"fz0\"} : f32[9223372036854775807*T+9223372036854775807*T]",
    "%9000 = input {name = \"fz0\"} : f32[-9223372036854775808*T,T-9223372036854775808]\n  output %9000 {name = \"fz1\"}",
    "%9000 = input {name = \"fz0\"} : f32[T,2,4]\n  %9001 = input {name = \"fz1\"} : i32[T]\n  %9002 = rope %9000, %9001 {layout = neox, theta = 1e999, dim = -9223372036854775808} : f32[T,2,4]",
    "%9000 = input {name = \"fz0\"} : f32[T,2,4]\n  %9001 = input {name = \"fz1\"} : i32[T]\n  %9002 = attention %9000, %9000, %9000, %9001 {window = -9223372036854775808, rope = yarn{theta = 1.0}} : f32[T,2,4]",
    "%9002 = reshape %0 {shape = [9223372036854775807,9223372036854775807]} : f32[1]",
    "%9002 = top_k %0 {k = 9223372036854775807} : i32[T,1]",
    "%9002 = slice %0 {axis = -1, start = -9223372036854775808} : f32[T,1]",
    "%9002 = concat %0, %0, %0 {axis = 0} : f32[3*T,576]",
    "%9002 = softmax %0 {axis = -9223372036854775808} : f32[T,576]",
    "%9002 = permute %0 {perm = [9223372036854775807, -1]} : f32[T,576]",
    "%9002 = reduce_sum %0 {axes = [-9223372036854775808, 9223372036854775807]} : f32[T]",
    "%9002 = gather %0, %0 {axis = -9223372036854775808} : f32[T,576]",
    "%9002 = rms_norm %0 {eps = -NaN} : f32[T,576]",
    "%9002 = cast %0 {dtype = q4_k} : q4_k[T,576]",
    "output %0 {name = \"\\u{10FFFF}\"}",
    "%9003 = param {name = \"w\"} : q4_k[-256]",
    "%9003 = constant {value = -9223372036854775808} : f32[]",
    "%9003 = constant {value = 1e-400} : f32[0,-1]",
    // `fused` carries a second little language in a string attribute.
    "%9004 = fused %0 {expr = \"mul(silu($0), $0)\"} : f32[T,576]",
    "%9004 = fused %0, %0 {expr = \"add($0, $1, $2)\"} : f32[T,576]",
    "%9004 = fused %0 {expr = \"$18446744073709551616\"} : f32[T,576]",
    "%9004 = fused %0 {expr = \"pow($0, -1e999)\"} : f32[T,576]",
    "%9004 = fused %0 {expr = \"neg(\u{0}$0)\"} : f32[T,576]",
    "%9004 = fused {expr = \"1.0\"} : f32[]",
];

/// Characters that stress the lexer's column counting and classification.
const CHARS: &[char] = &[
    '\0',
    '\t',
    '\r',
    '\u{b}',
    '\u{c}',
    '\u{7f}',
    '\u{85}',
    '\u{a0}',
    'é',
    'ß',
    'Ω',
    '日',
    '\u{301}',
    '\u{200b}',
    '\u{200f}',
    '\u{2028}',
    '\u{2029}',
    '\u{3000}',
    '\u{feff}',
    '\u{fffd}',
    '🦀',
    '\u{10ffff}',
    '١',
    '𝟙',
];

fn random_char(rng: &mut Rng) -> char {
    match rng.below(3) {
        0 => *rng.pick(CHARS),
        1 => (0x20u8 + rng.below(95) as u8) as char,
        _ => loop {
            if let Some(c) = char::from_u32(rng.below(0x11_0000) as u32) {
                break c;
            }
        },
    }
}

/// The nearest char boundary at or below `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn insert_at(s: &str, rng: &mut Rng, what: &str) -> String {
    let i = floor_boundary(s, rng.below(s.len() + 1));
    format!("{}{what}{}", &s[..i], &s[i..])
}

/// One random mutation of `s`.
fn mutate(s: &str, rng: &mut Rng) -> String {
    if s.is_empty() {
        return random_char(rng).to_string();
    }
    match rng.below(13) {
        // Flip one byte (in a byte view; invalid UTF-8 becomes U+FFFD).
        0 => {
            let mut b = s.as_bytes().to_vec();
            let i = rng.below(b.len());
            b[i] ^= 1 << rng.below(8);
            String::from_utf8_lossy(&b).into_owned()
        }
        // Replace one byte with printable ASCII.
        1 => {
            let mut b = s.as_bytes().to_vec();
            let i = rng.below(b.len());
            b[i] = 0x20 + rng.below(95) as u8;
            String::from_utf8_lossy(&b).into_owned()
        }
        // Delete a span.
        2 => {
            let a = floor_boundary(s, rng.below(s.len()));
            let b = floor_boundary(s, a + 1 + rng.below(24));
            let b = if b <= a { s.len() } else { b };
            format!("{}{}", &s[..a], &s[b..])
        }
        3 => {
            let p = *rng.pick(PUNCT);
            insert_at(s, rng, p)
        }
        4 => {
            let w = *rng.pick(WORDS);
            insert_at(s, rng, &format!(" {w} "))
        }
        5 => {
            let n = *rng.pick(NUMBERS);
            insert_at(s, rng, n)
        }
        6 => {
            let n = *rng.pick(SNIPPETS);
            insert_at(s, rng, n)
        }
        // A whole statement between two lines of the graph.
        12 => {
            let mut lines: Vec<&str> = s.split('\n').collect();
            let i = 1 + rng.below(lines.len().max(2) - 1);
            let stmt = format!("  {}", rng.pick(STATEMENTS));
            lines.insert(i.min(lines.len()), &stmt);
            lines.join("\n")
        }
        // Random UTF-8.
        7 => {
            let k = 1 + rng.below(4);
            let text: String = (0..k).map(|_| random_char(rng)).collect();
            insert_at(s, rng, &text)
        }
        // Duplicate a line.
        8 => {
            let mut lines: Vec<&str> = s.split('\n').collect();
            let i = rng.below(lines.len());
            lines.insert(i, lines[i]);
            lines.join("\n")
        }
        // Swap two lines.
        9 => {
            let mut lines: Vec<&str> = s.split('\n').collect();
            let (i, j) = (rng.below(lines.len()), rng.below(lines.len()));
            lines.swap(i, j);
            lines.join("\n")
        }
        // Replace a number (a run of digits) with another number.
        10 => {
            let starts: Vec<usize> = s
                .char_indices()
                .filter(|&(i, c)| c.is_ascii_digit() && (i == 0 || !s.as_bytes()[i - 1].is_ascii_digit()))
                .map(|(i, _)| i)
                .collect();
            if starts.is_empty() {
                return insert_at(s, rng, "0");
            }
            let a = *rng.pick(&starts);
            let b = a + s[a..].find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len() - a);
            let n = rng.pick(NUMBERS).trim_start_matches('%');
            format!("{}{n}{}", &s[..a], &s[b..])
        }
        // Replace a word with another word of the vocabulary.
        _ => {
            let w = *rng.pick(WORDS);
            let target = *rng.pick(WORDS);
            match s.match_indices(target).next() {
                Some((i, _)) => format!("{}{w}{}", &s[..i], &s[i + target.len()..]),
                None => insert_at(s, rng, w),
            }
        }
    }
}

/// Random token soup inside a graph: explores parser states that single mutations rarely reach.
fn token_soup(rng: &mut Rng) -> String {
    let mut s = String::from("graph @g {\n  %0 = input {name = \"x\"} : f32[T,4]\n");
    for _ in 0..rng.below(40) {
        let tok: String = match rng.below(6) {
            0 => rng.pick(PUNCT).to_string(),
            1 => rng.pick(WORDS).to_string(),
            2 => rng.pick(NUMBERS).to_string(),
            3 => format!("%{}", rng.below(3)),
            4 => random_char(rng).to_string(),
            _ => "\n ".to_string(),
        };
        s.push_str(&tok);
        s.push(' ');
    }
    if rng.coin() {
        s.push_str("\n}\n");
    }
    s
}

fn corpus() -> Vec<(String, String)> {
    let scale: usize = std::env::var("KILN_ROBUSTNESS_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let dir = fixtures_dir();
    let mut bases = kir_files(&dir);
    bases.extend(kir_files(&dir.join("bad")).into_iter().map(|(n, t)| (format!("bad/{n}"), t)));
    assert!(bases.len() >= 9, "expected the fixtures under {}", dir.display());
    let mut out = Vec::new();
    for (fi, (name, text)) in bases.iter().enumerate() {
        out.push((format!("{name} (unchanged)"), text.clone()));
        // Truncation at every 7th byte (rounded down to a char boundary).
        for cut in (0..text.len()).step_by(7) {
            let cut = floor_boundary(text, cut);
            out.push((format!("{name} truncated at {cut}"), text[..cut].to_string()));
        }
        let mut rng = Rng::new(0x6b69_6c6e ^ (fi as u64) << 32);
        for i in 0..1000 * scale {
            let k = 1 + [0, 0, 0, 1, 2, 3][rng.below(6)];
            let mut s = text.clone();
            for _ in 0..k {
                s = mutate(&s, &mut rng);
            }
            out.push((format!("{name} mutation #{i} ({k} edits)"), s));
        }
    }
    let mut rng = Rng::new(0x5eed);
    for i in 0..2000 * scale {
        out.push((format!("token soup #{i}"), token_soup(&mut rng)));
    }
    out
}

/// Checks that a parse error points inside `src`.
fn check_position(src: &str, e: &ParseError) -> Result<(), String> {
    let lines: Vec<&str> = src.split('\n').collect();
    if e.line < 1 || e.line > lines.len() {
        return Err(format!("error line {} outside 1..={}: {e}", e.line, lines.len()));
    }
    let len = lines[e.line - 1].chars().count();
    if e.col < 1 || e.col > len + 1 {
        return Err(format!("error column {} outside 1..={} of line {}: {e}", e.col, len + 1, e.line));
    }
    Ok(())
}

/// Everything we do with one input; returns Ok(parsed?) or a description of what went wrong.
fn exercise(src: &str) -> Result<bool, String> {
    match parse(src) {
        Err(e) => check_position(src, &e).map(|_| false),
        Ok(g) => {
            let _ = verify_all(&g);
            let text = print(&g);
            let g2: Graph =
                parse(&text).map_err(|e| format!("printed graph does not parse: {e}\n--- printed:\n{text}"))?;
            if print(&g2) != text {
                return Err(format!("print(parse(print(g))) differs\n--- printed:\n{text}"));
            }
            if !g2.same_as(&g) {
                return Err(format!("re-parsed graph is not the same\n--- printed:\n{text}"));
            }
            Ok(true)
        }
    }
}

#[test]
fn mutated_fixtures_never_panic_and_errors_are_located() {
    let start = std::time::Instant::now();
    let corpus = corpus();
    let (mut ok, mut err) = (0usize, 0usize);
    let mut failures = Vec::new();
    for (what, src) in &corpus {
        match catch_unwind(AssertUnwindSafe(|| exercise(src))) {
            Ok(Ok(true)) => ok += 1,
            Ok(Ok(false)) => err += 1,
            Ok(Err(msg)) => failures.push(format!("{what}: {msg}\n--- input:\n{src}")),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{what}: PANIC {msg}\n--- input:\n{src}"))
            }
        }
    }
    eprintln!("parser robustness: {} inputs ({ok} parsed, {err} rejected) in {:.2?}", corpus.len(), start.elapsed());
    assert!(corpus.len() >= 10_000, "the corpus should hold thousands of inputs, has {}", corpus.len());
    assert!(ok > 100 && err > 1000, "the corpus should exercise both paths: {ok} parsed, {err} rejected");
    if !failures.is_empty() {
        panic!(
            "{} of {} inputs failed; the first few:\n\n{}",
            failures.len(),
            corpus.len(),
            failures[..failures.len().min(5)].join("\n\n")
        );
    }
}

/// The corpus is the same on every run (so a CI failure names a reproducible input).
#[test]
fn corpus_is_deterministic() {
    let a = corpus();
    let b = corpus();
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x == y));
}

// -------------------------------------------------------------------------------------------------
// Regressions: inputs that panicked (integer overflow in debug builds) before the fixes in
// shape.rs / infer.rs / parse/mod.rs. Each must now be a located error or a graph that round-trips.

fn no_panic(src: &str) -> Result<bool, String> {
    catch_unwind(AssertUnwindSafe(|| exercise(src))).unwrap_or_else(|_| Err("panicked".into()))
}

fn graph(body: &str) -> String {
    format!("graph @g {{\n{body}\n}}\n")
}

#[test]
fn regression_overflowing_dims_are_errors() {
    let cases = [
        // Dim arithmetic in the parser: constant and coefficient sums, and the negation of i64::MIN.
        // The error points at the literal whose term overflowed.
        ("  %0 = input {name = \"x\"} : f32[9223372036854775807+1]", "2:53: dimension out of range"),
        (
            "  %0 = input {name = \"x\"} : f32[9223372036854775807*T+9223372036854775807*T]",
            "2:55: dimension out of range",
        ),
        ("  %0 = input {name = \"x\"} : f32[-9223372036854775809]", "2:34: dimension out of range"),
        ("  %0 = input {name = \"x\"} : f32[T-9223372036854775808-1]", "2:55: dimension out of range"),
    ];
    for (body, want) in cases {
        let src = graph(body);
        assert_eq!(no_panic(&src), Ok(false), "{src}");
        assert_eq!(parse(&src).unwrap_err().to_string(), want, "{src}");
    }
}

#[test]
fn regression_overflow_in_result_type_rules() {
    let x = |ty: &str| format!("  %0 = input {{name = \"x\"}} : {ty}\n");
    let cases = [
        (x("f32[4294967296,4294967296]") + "  %1 = reshape %0 {shape = [1]} : f32[1]", "the element count of"),
        (x("f32[4]") + "  %1 = split %0 {axis = 0, sizes = [9223372036854775807, 1], index = 0} : f32[4]", "add up to"),
        (
            x("f32[4,4]")
                + "  %1 = moe %0, %0, %0, %0, %0 {experts = 4611686018427387904, top_k = 1, activation = silu} : f32[4,4]",
            "4611686018427387904 experts need 13835058055282163712 expert weights",
        ),
        (x("f32[-5]") + "  %1 = slice %0 {axis = 0, start = -9223372036854775807} : f32[1]", "overflows"),
        (x("f32[T]") + "  %1 = slice %0 {axis = 0, start = -9223372036854775808} : f32[T]", "overflows"),
        (x("f32[9223372036854775807]") + "  %1 = concat %0, %0 {axis = 0} : f32[1]", "overflows"),
    ];
    for (body, want) in cases {
        let src = graph(&body);
        assert_eq!(no_panic(&src), Ok(false), "{src}");
        let e = parse(&src).unwrap_err();
        assert!(e.msg.contains(want), "{e} does not mention {want:?}\n{src}");
        assert_eq!(e.line, 3, "{e}");
    }
}

#[test]
fn regression_i64_extremes_read_back() {
    // i64::MIN as an attribute and as a dim used to be unparseable ("integer out of range").
    let src = graph(
        "  %0 = input {name = \"x\"} : f32[-9223372036854775808,-9223372036854775808*T,T-9223372036854775808]\n  \
         %1 = input {name = \"y\"} : f32[T,1,2]\n  %2 = input {name = \"p\"} : i32[T]\n  \
         %3 = rope %1, %2 {layout = neox, scaling = llama3{factor = 8.0, high_freq_factor = 4.0, low_freq_factor = 1.0, original_max_position = -9223372036854775808}, theta = 10000.0} : f32[T,1,2]\n  \
         output %3 {name = \"y\"}\n  output %0 {name = \"z\"}",
    );
    assert_eq!(no_panic(&src), Ok(true));
    assert_eq!(print(&parse(&src).unwrap()), src);
}

/// Deeply nested expressions in a `fused` node must be refused, not overflow the stack (which
/// would abort the whole test binary rather than panic).
#[test]
fn deeply_nested_fused_expression_is_refused() {
    for depth in [10usize, 300, 100_000] {
        let expr = format!("{}$0{}", "neg(".repeat(depth), ")".repeat(depth));
        let src = graph(&format!(
            "  %0 = input {{name = \"x\"}} : f32[4]\n  %1 = fused %0 {{expr = {expr:?}}} : f32[4]\n  output %1 {{name = \"y\"}}"
        ));
        let r = no_panic(&src);
        assert!(r.is_ok(), "depth {depth}: {r:?}");
    }
}
