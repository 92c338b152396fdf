#!/usr/bin/env bash
# MoE expert offloading sweep on one compiled MoE artifact (`kiln compile ... --passes ...,moe-dispatch`):
# decode speed and expert-cache hit rate for every eviction policy (lru, lfu, router-ema), with and
# without prefetching guessed experts (0, 1 and top_k per token), at every cache size from top_k to E-1 experts per layer;
# plus the naive baseline (no reuse: every expert loaded on demand), the fully resident cache
# (E experts per layer) and a plain run without offloading.
#
#   bench/offload.sh ARTIFACT [OUT_DIR]     (default OUT_DIR: target/bench/offload/<artifact name>)
#
# Environment: THREADS (default 1), KILN (default ./target/release/kiln), PROMPT_LEN (64), GEN (64),
# REPEAT (3: best of), POLICIES (default "lru lfu router-ema"), PREFETCH (the prefetch counts to sweep; default "0 1 top_k"), TEXT (decode
# teacher-forced over this text for real routing; default /usr/share/common-licenses/GPL-3 when it
# exists, else greedy generation).
# Writes OUT_DIR/<policy>-p<prefetch>-k<K>.json (traces), OUT_DIR/bench/*.json (the bench reports),
# OUT_DIR/offload.svg (plot) and OUT_DIR/summary.md (tables).
set -euo pipefail

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}
[[ $# -ge 1 && $# -le 2 ]] || usage
[[ $1 == -h || $1 == --help ]] && usage 0

root="$(cd "$(dirname "$0")/.." && pwd)"
art="$1"
[[ -f $art/manifest.json ]] || { echo "$art is not a compiled artifact (no manifest.json)" >&2; exit 1; }
out="${2:-$root/target/bench/offload/$(basename "${art%/}")}"
kiln="${KILN:-$root/target/release/kiln}"
threads="${THREADS:-1}"
[[ -x $kiln ]] || { echo "build kiln first: cargo build --release --bin kiln" >&2; exit 1; }

# Experts per layer (E) and experts per token (top_k) of the first MoE layer.
read -r experts top_k < <(python3 - "$art/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
layers = m.get("moe_layers") or []
if not layers:
    sys.exit(f"{sys.argv[1]}: no moe_layers (compile a MoE model with the moe-dispatch pass)")
print(len(layers[0]["experts"]), layers[0]["top_k"])
PY
)
echo "$art: $experts experts per layer, top-$top_k; results in $out" >&2

mkdir -p "$out/bench"
# Old traces (of this script's names only) would mix into the report.
policies="${POLICIES:-lru lfu router-ema}"
for policy in none $policies; do rm -f "$out/$policy"-p*-k*.json; done

common=(--prompt-len "${PROMPT_LEN:-64}" --gen "${GEN:-64}" --threads "$threads" --repeat "${REPEAT:-3}" --json)
text="${TEXT-/usr/share/common-licenses/GPL-3}"
[[ -n $text && -f $text ]] && common+=(--text "$text")
prefetches="${PREFETCH:-0 1 $top_k}"
prefetches="$(tr ' ' '\n' <<< "$prefetches" | sort -nu | tr '\n' ' ')"

# bench NAME [kiln bench flags...]: one run, its report in bench/NAME.json.
bench() {
    local name="$1"
    shift
    echo "  $name" >&2
    "$kiln" bench "$art" "${common[@]}" "$@" > "$out/bench/$name.json"
}

bench plain
bench none-p0-k"$top_k" --expert-cache "$top_k" --policy none --trace "$out/none-p0-k$top_k.json"
bench lru-p0-k"$experts" --expert-cache "$experts" --policy lru --trace "$out/lru-p0-k$experts.json"
for policy in $policies; do
    for prefetch in $prefetches; do
        for ((k = top_k; k < experts; k++)); do
            name="$policy-p$prefetch-k$k"
            flags=(--expert-cache "$k" --policy "$policy" --trace "$out/$name.json")
            [[ $prefetch -gt 0 ]] && flags+=(--prefetch "$prefetch")
            bench "$name" "${flags[@]}"
        done
    done
done

"$kiln" offload-report "$out"/*.json --markdown --plot "$out/offload.svg" > "$out/summary.md"
# The run without offloading has no trace; its speed goes under the table.
python3 - "$out/bench/plain.json" >> "$out/summary.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"\nWithout offloading (all experts in the weights mapping): decode {r['decode_tok_per_s']:.1f} tok/s, "
      f"prefill {r['prefill_tok_per_s']:.1f} tok/s ({r['threads']} threads).")
PY
echo "wrote $out/summary.md and $out/offload.svg" >&2
