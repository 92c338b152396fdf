use kiln_ir::*;
fn probe(name: &str, src: &str) {
    let r = std::panic::catch_unwind(|| {
        let r = parse(src);
        match &r {
            Ok(g) => {
                let _ = verify(g);
                let p = print(g);
                let g2 = parse(&p);
                (format!("OK"), Some(p), g2.map(|g2| print(&g2)).map_err(|e| e.to_string()))
            }
            Err(e) => (e.to_string(), None, Ok(String::new())),
        }
    });
    println!("{name}: {:?}", r.map_err(|_| "PANIC"));
}
#[test]
fn scratch() {
    let h = |body: &str| format!("graph @g {{\n{body}\n}}\n");
    probe("dim overflow", &h("%0 = input {name = \"x\"} : f32[9223372036854775807+1]"));
    probe("dim min", &h("%0 = input {name = \"x\"} : f32[-9223372036854775807-1]\n output %0 {name=\"y\"}"));
    probe("coef overflow", &h("%0 = input {name = \"x\"} : f32[9223372036854775807*T+9223372036854775807*T]"));
    probe(
        "reshape numel",
        &h("%0 = input {name = \"x\"} : f32[4294967296,4294967296]\n %1 = reshape %0 {shape = [1]} : f32[1]"),
    );
    probe("split sum", &h("%0 = input {name = \"x\"} : f32[4]\n %1 = split %0 {axis = 0, sizes = [9223372036854775807, 1], index = 0} : f32[4]"));
    probe("moe 3e", &h("%0 = input {name = \"x\"} : f32[4,4]\n %1 = moe %0, %0, %0, %0, %0 {experts = 4611686018427387904, top_k = 1, activation = silu} : f32[4,4]"));
    probe(
        "slice min",
        &h("%0 = input {name = \"x\"} : f32[T]\n %1 = slice %0 {axis = 0, start = -9223372036854775807} : f32[T]"),
    );
    probe(
        "slice min2",
        &h("%0 = input {name = \"x\"} : f32[-5]\n %1 = slice %0 {axis = 0, start = -9223372036854775807} : f32[T]"),
    );
    probe(
        "int min attr",
        &h("%0 = input {name = \"x\"} : f32[T]\n %1 = slice %0 {axis = 0, start = -9223372036854775808} : f32[T]"),
    );
    probe(
        "concat overflow",
        &h("%0 = input {name = \"x\"} : f32[9223372036854775807]\n %1 = concat %0, %0 {axis = 0} : f32[1]"),
    );
    probe(
        "neg nan",
        &h("%0 = input {name = \"x\"} : f32[4]\n %1 = rms_norm %0 {eps = -NaN} : f32[4]\n output %1 {name=\"y\"}"),
    );
    probe(
        "big float",
        &h("%0 = input {name = \"x\"} : f32[4]\n %1 = rms_norm %0 {eps = 1e400} : f32[4]\n output %1 {name=\"y\"}"),
    );
    probe("topk neg", &h("%0 = input {name = \"x\"} : f32[-4]\n %1 = top_k %0 {k = 1} : i32[1]"));
    probe(
        "rank0 split",
        &h("%0 = input {name = \"x\"} : f32[]\n %1 = split %0 {axis = 0, sizes=[1], index = 0} : f32[1]"),
    );
    probe("attn", &h("%0 = input {name = \"x\"} : f32[T,-2,4]\n %1 = input {name=\"p\"} : i32[T]\n %2 = attention %0, %0, %0, %1 : f32[T,-2,4]"));
    probe("gather", &h("%0 = input {name = \"x\"} : f32[T,4]\n %1 = input {name=\"p\"} : i32[T,9]\n %2 = gather %0, %1 {axis = 1} : f32[T,9]\n output %2 {name=\"y\"}"));
    probe("empty graph name", "graph @\"\" {\n}\n");
    probe("weird name", "graph @\"a b\\n\\u{1F600}\" {\n}\n");
    probe("bad unicode", "graph @\"\\u{D800}\" {\n}\n");
    probe("value huge", &h("%99999999999999999999 = input {name = \"x\"} : f32[4]"));
    probe("reshape syms", &h("%0 = input {name = \"x\"} : f32[T,4]\n %1 = reshape %0 {shape = [2*T,2]} : f32[2*T,2]"));
    probe("dim neg sym", &h("%0 = input {name = \"x\"} : f32[-T]\n output %0 {name=\"y\"}"));
    probe("dim 0*T", &h("%0 = input {name = \"x\"} : f32[0*T]\n output %0 {name=\"y\"}"));
    probe("dim T-T", &h("%0 = input {name = \"x\"} : f32[T-T]\n output %0 {name=\"y\"}"));
}
