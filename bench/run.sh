#!/usr/bin/env bash
# Kiln against llama.cpp on SmolLM2-135M-Instruct, side by side in one run on this machine:
# for each weight precision, pp128 and tg64 at 1 and 2 threads, plus Kiln's roofline fraction.
#
#   bench/run.sh [precisions...]      (default: f32 bf16 f16 q8_0 q4_0)
#
# Kiln runs with --huge-pages: the artifact was compiled a moment ago, so its page cache is on 4 KiB
# pages, which costs a fifth of the decode speed (docs/bench.md).
# Needs `make release` and the model (`make model`); builds llama.cpp once (bench/llama-cpp.sh).
# Writes target/bench/results.md (a table) and target/bench/*.json (raw reports).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
kiln=./target/release/kiln
model_dir=.cache/models/SmolLM2-135M-Instruct
gguf=.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
out=target/bench
precisions=("$@")
[[ ${#precisions[@]} -gt 0 ]] || precisions=(f32 bf16 f16 q8_0 q4_0)
threads=(1 2)
mkdir -p "$out"
[[ -x $kiln ]] || { echo "build kiln first: make release" >&2; exit 1; }
[[ -f $model_dir/config.json ]] || { echo "fetch and import the model first: make demo (or make model + kiln import)" >&2; exit 1; }
llama="$(bash bench/llama-cpp.sh)/bin"

llama_type() {
    case "$1" in f32) echo F32 ;; f16) echo F16 ;; bf16) echo BF16 ;; q8_0) echo Q8_0 ;; q4_0) echo Q4_0 ;; esac
}

echo "| precision | threads | llama.cpp pp128 | Kiln pp128 | llama.cpp tg64 | Kiln tg64 | Kiln/llama.cpp tg | Kiln roofline |" > "$out/results.md"
echo "|---|---|---|---|---|---|---|---|" >> "$out/results.md"
for p in "${precisions[@]}"; do
    g="$out/smollm2-$p.gguf"
    # The same weights for both: llama.cpp requantizes the Q4_1 GGUF Kiln imported from.
    [[ -f $g ]] || "$llama/llama-quantize" --allow-requantize "$gguf" "$g" "$(llama_type "$p")" > "$out/quantize-$p.log" 2>&1
    art="$out/smollm2-$p.kiln"
    "$kiln" compile "$model_dir" --weights "$p" -o "$art" 2> "$out/compile-$p.log"
    for t in "${threads[@]}"; do
        "$llama/llama-bench" -m "$g" -p 128 -n 64 -t "$t" -r 3 -o json > "$out/llama-$p-t$t.json" 2> /dev/null
        "$kiln" bench "$art" --prompt-len 128 --gen 64 --threads "$t" --repeat 3 --huge-pages --json > "$out/kiln-$p-t$t.json"
        python3 - "$p" "$t" "$out" >> "$out/results.md" <<'PY'
import json, sys
p, t, out = sys.argv[1], sys.argv[2], sys.argv[3]
ll = json.load(open(f"{out}/llama-{p}-t{t}.json"))
pp = next(r["avg_ts"] for r in ll if r["n_prompt"] > 0)
tg = next(r["avg_ts"] for r in ll if r["n_gen"] > 0)
k = json.load(open(f"{out}/kiln-{p}-t{t}.json"))
print(f"| {p} | {t} | {pp:.1f} | {k['prefill_tok_per_s']:.1f} | {tg:.1f} | {k['decode_tok_per_s']:.1f} | "
      f"{k['decode_tok_per_s']/tg:.2f}× | {100*k['roofline_fraction']:.0f}% of {k['read_bandwidth_gb_s']:.1f} GB/s |")
PY
    done
done
cat "$out/results.md"
