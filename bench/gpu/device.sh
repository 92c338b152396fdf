#!/usr/bin/env bash
# Kiln's CUDA backend on a lent GPU machine, in one call: correctness against the CPU backend, the
# reference interpreter and Hugging Face transformers on small random models, then decode/prefill
# speed of a ~1.1B-parameter llama (TinyLlama's shape, bf16) against transformers eager and
# torch.compile, and against the memory roofline.
#
#   (here)   bash bench/gpu/bundle.sh
#   (device) run(command="bash bench/gpu/device.sh", carry=[".gpu-bundle"], timeout_s=590)
#
# Writes under $OUT (or /tmp/kiln-gpu-out when $OUT is unset): results.md, results.json, log.txt
# and raw.tar.gz (every kiln/HF report; logits files over 4 MB left out). Every step runs under
# its own timeout and the whole script under a budget (KILN_GPU_BUDGET seconds, default 480):
# a step that fails or times out is recorded and the script goes on; a step that no longer fits
# the budget is recorded as skipped. Knobs: KILN_GPU_BUDGET, KILN_GPU_ARCHES (default "llama
# mistral qwen2 mixtral gemma3"), KILN_GPU_SKIP_HF_COMPILE=1 (transformers eager only).
set -u
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-/tmp/kiln-gpu-out}
W=/tmp/kiln-gpu            # models and artifacts
R=$W/raw                   # reports (tarred into $OUT/raw.tar.gz)
KDIR=/tmp/kiln             # the unpacked bundle
K=$KDIR/kiln               # wrapper: bin/kiln with LD_LIBRARY_PATH=lib for kiln alone
T0=$(date +%s)
T_END=$((T0 + ${KILN_GPU_BUDGET:-480}))
ARCHES=${KILN_GPU_ARCHES:-llama mistral qwen2 mixtral gemma3}
IDS=1,2,3,4,5,6,7,8,9,10,11,12
DECODE=8
LONG_IDS=$(seq 1 300 | awk '{print ($1 * 37) % 997 + 1}' | paste -sd,)
CMP="python3 $ROOT/bench/gpu/compare_logits.py"
# TinyLlama-1.1B's shape (tied embeddings: ~1.03B parameters).
BIG="--arch llama --layers 22 --hidden 2048 --intermediate 5632 --heads 32 --kv-heads 4 --vocab 32000 --dtype bf16 --seed 1"

rm -rf "$W"
mkdir -p "$OUT" "$R"

# step NAME SECONDS CMD...: run CMD under `timeout`, at most SECONDS and never past the budget;
# stdout to $STDOUT when set. Appends {"step","status","rc","seconds"} to $R/steps.jsonl.
step() {
    local name=$1 want=$2
    shift 2
    local now left t rc status s
    now=$(date +%s)
    left=$((T_END - now))
    t=$((want < left ? want : left))
    if ((t < 5)); then
        echo "== SKIP $name: the ${KILN_GPU_BUDGET:-480} s budget is spent"
        echo "{\"step\":\"$name\",\"status\":\"skipped\",\"rc\":null,\"seconds\":0}" >>"$R/steps.jsonl"
        return 1
    fi
    local cmd="$*"
    ((${#cmd} > 250)) && cmd="${cmd:0:250}..."
    echo "== [$((now - T0)) s] $name (timeout $t s): $cmd"
    s=$(date +%s.%N)
    if [[ -n ${STDOUT:-} ]]; then
        timeout -k 10 "$t" "$@" >"$STDOUT"
    else
        timeout -k 10 "$t" "$@"
    fi
    rc=$?
    case $rc in 0) status=ok ;; 124 | 137) status=timeout ;; *) status=fail ;; esac
    local dur
    dur=$(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    [[ $status == ok ]] || echo "== $name: ${status^^} (rc $rc) after $dur s"
    echo "{\"step\":\"$name\",\"status\":\"$status\",\"rc\":$rc,\"seconds\":$dur}" >>"$R/steps.jsonl"
    return $rc
}

# diff TEST REF THRESHOLD LABEL: one comparison, appended to $R/correctness.jsonl.
diff_logits() {
    timeout 60 $CMP diff "$R/logits-$1.json" "$R/logits-$2.json" --threshold "$3" --label "$4" --append "$R/correctness.jsonl"
}

main() {
    echo "# kiln GPU harness, $(date -u +%FT%TZ), budget ${KILN_GPU_BUDGET:-480} s"
    # ---- a. environment and the bundle ---------------------------------------------------------
    {
        echo "## nvidia-smi"
        nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu --format=csv 2>&1
        nvidia-smi 2>&1 | head -20
        echo "## system"
        uname -a; nproc; ldd --version 2>&1 | head -1; free -g 2>&1 | head -2; df -h /tmp 2>&1 | tail -1
        echo "## python"
        python3 -c 'import sys, torch, transformers, numpy; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "numpy", numpy.__version__)' 2>&1
    } | tee "$R/env.txt"

    local have_kiln=0
    if [[ -f .gpu-bundle/kiln.tar.xz ]]; then
        rm -rf "$KDIR" && mkdir -p "$KDIR"
        if step unpack 120 tar -C "$KDIR" -xJf .gpu-bundle/kiln.tar.xz; then
            printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s/bin/kiln "$@"\n' "$KDIR" "$KDIR" >"$K"
            chmod +x "$K"
            cat "$KDIR/BUILD-INFO" 2>/dev/null | tee "$R/build-info.txt"
            echo "## ldd (bundle libraries first)"
            LD_LIBRARY_PATH=$KDIR/lib ldd "$KDIR/bin/kiln" | grep -E 'not found|=>' | sed 's/ (0x.*//'
            STDOUT=$R/targets.txt step targets 30 "$K" targets && have_kiln=1
            cat "$R/targets.txt" 2>/dev/null
        fi
    else
        echo "== NO .gpu-bundle/kiln.tar.xz: run bench/gpu/bundle.sh here and carry .gpu-bundle; kiln steps skipped"
    fi
    if ((have_kiln)) && ! "$K" logits --help >/dev/null 2>&1; then
        echo "== WARNING: this kiln has no 'logits' command: the correctness steps will fail"
    fi

    # The 1.1B model is only CPU and disk work: write it while the GPU checks run.
    local gen_pid=
    if ((have_kiln)); then
        (step gen-1b 180 "$K" gen-model $BIG -o "$W/tl" --force >"$R/gen-1b.log" 2>&1) &
        gen_pid=$!
    fi

    # ---- b. correctness on small models ---------------------------------------------------------
    local a w hf_triples=()
    if ((have_kiln)); then
        for a in $ARCHES; do
            local m=$W/m-$a extra=
            [[ $a == mixtral ]] && extra="--experts 4 --top-k 2"
            # shellcheck disable=SC2086
            step "gen-$a" 60 "$K" gen-model --arch "$a" --layers 2 --hidden 256 --intermediate 512 --heads 8 \
                --kv-heads 2 --vocab 1000 --dtype f32 --seed 1 $extra -o "$m" --force || continue
            step "logits-$a-interp" 60 "$K" logits "$m" --interp --ids $IDS --decode $DECODE --out "$R/logits-$a-interp.json"
            for w in f32 bf16; do
                step "compile-$a-cpu-$w" 90 "$K" compile "$m" -o "$W/$a-cpu-$w.kiln" --weights $w &&
                    step "logits-$a-cpu-$w" 60 "$K" logits "$W/$a-cpu-$w.kiln" --ids $IDS --decode $DECODE --out "$R/logits-$a-cpu-$w.json"
                if step "compile-$a-cuda-$w" 90 "$K" compile "$m" -o "$W/$a-cuda-$w.kiln" --weights $w --target cuda:sm_90; then
                    step "logits-$a-cuda-$w" 60 "$K" logits "$W/$a-cuda-$w.kiln" --ids $IDS --decode $DECODE --out "$R/logits-$a-cuda-$w.json"
                    step "logits-$a-cuda-$w-nograph" 60 "$K" logits "$W/$a-cuda-$w.kiln" --ids $IDS --decode $DECODE \
                        --no-cuda-graph --out "$R/logits-$a-cuda-$w-nograph.json"
                fi
            done
            # A 300-token prompt: chunked prefill (128 tokens per call) and attention over many KV tiles.
            if [[ -d $W/$a-cpu-f32.kiln && -d $W/$a-cuda-f32.kiln ]]; then
                step "logits-$a-cpu-f32-long" 60 "$K" logits "$W/$a-cpu-f32.kiln" --ids "$LONG_IDS" --decode 4 --out "$R/logits-$a-cpu-f32-long.json"
                step "logits-$a-cuda-f32-long" 60 "$K" logits "$W/$a-cuda-f32.kiln" --ids "$LONG_IDS" --decode 4 --out "$R/logits-$a-cuda-f32-long.json"
            fi
            # HF is fed the CPU run's tokens (the CUDA run's if the CPU one is missing).
            local src=$R/logits-$a-cpu-f32.json
            [[ -f $src ]] || src=$R/logits-$a-cuda-f32.json
            [[ -f $src ]] && hf_triples+=("$m" "$src" "$R/logits-$a-hf-f32.json")
        done
        if ((${#hf_triples[@]})); then
            step hf-logits 180 $CMP hf --device cuda --dtype float32 "${hf_triples[@]}"
        fi
        echo "== correctness"
        for a in $ARCHES; do
            diff_logits "$a-cpu-f32" "$a-interp" 1e-4 "$a f32: kiln cpu vs kiln interp"
            diff_logits "$a-cuda-f32" "$a-cpu-f32" 1e-4 "$a f32: kiln cuda (graphs) vs kiln cpu"
            diff_logits "$a-cuda-f32-nograph" "$a-cpu-f32" 1e-4 "$a f32: kiln cuda (no graph) vs kiln cpu"
            diff_logits "$a-cuda-f32" "$a-cuda-f32-nograph" 1e-4 "$a f32: kiln cuda graphs vs no graph"
            diff_logits "$a-cpu-f32" "$a-hf-f32" 1e-3 "$a f32: kiln cpu vs HF f32"
            diff_logits "$a-cuda-f32" "$a-hf-f32" 1e-3 "$a f32: kiln cuda vs HF f32"
            diff_logits "$a-cuda-f32-long" "$a-cpu-f32-long" 1e-4 "$a f32, 300-token prompt: kiln cuda vs kiln cpu"
            diff_logits "$a-cuda-bf16" "$a-cpu-bf16" 1e-3 "$a bf16: kiln cuda (graphs) vs kiln cpu"
            diff_logits "$a-cuda-bf16-nograph" "$a-cpu-bf16" 1e-3 "$a bf16: kiln cuda (no graph) vs kiln cpu"
        done
    fi

    # ---- c. speed on the 1.1B llama (bf16) --------------------------------------------------------
    local big_ok=0
    if [[ -n $gen_pid ]]; then
        wait "$gen_pid"
        cat "$R/gen-1b.log"
        [[ -f $W/tl/config.json ]] && big_ok=1
    fi
    local bpt=
    if ((big_ok)); then
        step compile-1b-cuda 240 "$K" compile "$W/tl" -o "$W/tl-cuda.kiln" --weights bf16 --max-context 1024 --target cuda:sm_90 &&
            {
                STDOUT=$R/kiln-bench-graph.json step bench-1b-graph 150 "$K" bench "$W/tl-cuda.kiln" --json --prompt-len 128 --gen 128 --repeat 3
                cat "$R/kiln-bench-graph.json"
                STDOUT=$R/kiln-bench-nograph.json step bench-1b-nograph 150 "$K" bench "$W/tl-cuda.kiln" --json --prompt-len 128 --gen 128 --repeat 3 --no-cuda-graph
                cat "$R/kiln-bench-nograph.json"
            }
        bpt=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["decode_bytes_per_token"])' "$R/kiln-bench-graph.json" 2>/dev/null ||
            python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["decode_bytes_per_token"])' "$R/kiln-bench-nograph.json" 2>/dev/null)
        # Correctness at full size (~30 s): the same bf16 weights on CUDA and on the CPU.
        local ids32
        ids32=$(seq -s, 101 132)
        if [[ -d $W/tl-cuda.kiln ]]; then
            step logits-1b-cuda-bf16 60 "$K" logits "$W/tl-cuda.kiln" --ids "$ids32" --decode 4 --out "$R/logits-1b-cuda-bf16.json"
            step compile-1b-cpu 120 "$K" compile "$W/tl" -o "$W/tl-cpu.kiln" --weights bf16 --max-context 1024 &&
                step logits-1b-cpu-bf16 90 "$K" logits "$W/tl-cpu.kiln" --ids "$ids32" --decode 4 --out "$R/logits-1b-cpu-bf16.json"
            diff_logits 1b-cuda-bf16 1b-cpu-bf16 1e-3 "llama-1.1B bf16: kiln cuda vs kiln cpu"
            rm -rf "$W/tl-cpu.kiln"
        fi
        # transformers eager and torch.compile on the same folder, and the device bandwidth.
        local engines=eager,compile
        [[ ${KILN_GPU_SKIP_HF_COMPILE:-0} == 1 ]] && engines=eager
        step hf-bench 330 python3 bench/gpu/hf_bench.py "$W/tl" --out "$R/hf-bench.json" --prompt-len 128 --gen 128 \
            --repeat 3 --engines $engines ${bpt:+--bytes-per-token $bpt}
    fi

    # ---- d. report -------------------------------------------------------------------------------
    echo "== [$(($(date +%s) - T0)) s] report"
    python3 bench/gpu/report.py "$R" "$OUT"
    (cd "$W" && find raw -type f -size -4M -print0 | tar -czf "$OUT/raw.tar.gz" --null -T -)
    ls -la "$OUT"
    echo "== done in $(($(date +%s) - T0)) s"
}

main 2>&1 | tee "$OUT/log.txt"
