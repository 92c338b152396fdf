#!/usr/bin/env python3
"""Summarize a bench/gpu/device.sh run: RAW_DIR's reports -> OUT_DIR/results.json and results.md.

    report.py RAW_DIR OUT_DIR

Reads (each optional): steps.jsonl, correctness.jsonl, kiln-bench-graph.json,
kiln-bench-nograph.json, hf-bench.json, env.txt, build-info.txt, targets.txt.
The roofline is the torch-measured device copy bandwidth (read + write bytes / time) divided by
Kiln's decode_bytes_per_token (weights + KV cache read per decode step); every engine is measured
against that one number. Standard library only.
"""
import json
import os
import sys


def jload(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"error": f"no {os.path.basename(path)}"}
    except Exception as e:
        return {"error": f"{os.path.basename(path)}: {type(e).__name__}: {e}"}


def jlines(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def fmt(x, spec=".1f"):
    return "—" if x is None else format(x, spec)


def main(raw, out):
    steps = jlines(os.path.join(raw, "steps.jsonl"))
    corr = jlines(os.path.join(raw, "correctness.jsonl"))
    kg = jload(os.path.join(raw, "kiln-bench-graph.json"))
    kn = jload(os.path.join(raw, "kiln-bench-nograph.json"))
    hf = jload(os.path.join(raw, "hf-bench.json"))

    bpt = kg.get("decode_bytes_per_token") or kn.get("decode_bytes_per_token")
    bw_torch = (hf.get("bandwidth") or {}).get("gb_s")
    bw_kiln = kg.get("read_bandwidth_gb_s") or kn.get("read_bandwidth_gb_s")
    bw = bw_torch or bw_kiln
    roofline = bw * 1e9 / bpt if (bw and bpt) else None

    rows = []

    def add(engine, decode, prefill, note, error=None):
        frac = decode / roofline if (decode and roofline) else None
        rows.append({"engine": engine, "decode_tok_per_s": decode, "roofline_fraction": frac,
                     "prefill_tok_per_s": prefill, "note": note, "error": error})

    for name, k in (("kiln (CUDA graphs)", kg), ("kiln (--no-cuda-graph)", kn)):
        own = k.get("roofline_fraction")
        add(name, k.get("decode_tok_per_s"), k.get("prefill_tok_per_s"),
            f"kiln's own roofline: {fmt(own and 100 * own, '.0f')}% of {fmt(k.get('read_bandwidth_gb_s'), '.0f')} GB/s"
            if own else "", k.get("error"))
    for key, name in (("eager", "transformers eager (bf16)"), ("compile", "transformers torch.compile (static cache, reduce-overhead)")):
        e = (hf.get("engines") or {}).get(key)
        if e is None:
            add(name, None, None, "", hf.get("error") or "not run")
            continue
        warm = e.get("warmup_s")
        note = f"median {fmt(e.get('decode_tok_per_s_median'))} tok/s" if e.get("decode_tok_per_s_median") else ""
        if warm:
            note += f"; warm-up {sum(warm):.0f} s" + (" (compilation)" if key == "compile" else "")
        err = e.get("error")
        add(name, e.get("decode_tok_per_s"), e.get("prefill_tok_per_s"), note, err and err.strip().splitlines()[-1])

    kiln_dec = kg.get("decode_tok_per_s")
    tc_dec = ((hf.get("engines") or {}).get("compile") or {}).get("decode_tok_per_s")
    targets = {
        "kiln_decode_ge_80pct_roofline": None if not (kiln_dec and roofline) else kiln_dec / roofline >= 0.8,
        "kiln_decode_faster_than_torch_compile": None if not (kiln_dec and tc_dec) else kiln_dec > tc_dec,
        "correctness_all_pass": None if not corr else all(c.get("pass") for c in corr),
    }
    results = {
        "model": "llama, TinyLlama-1.1B shape (22 layers, hidden 2048, intermediate 5632, 32/4 heads, vocab 32000), bf16, random weights",
        "bandwidth_gb_s_torch_copy": bw_torch,
        "bandwidth_gb_s_kiln": bw_kiln,
        "decode_bytes_per_token": bpt,
        "roofline_tok_per_s": roofline,
        "speed": rows,
        "targets": targets,
        "correctness": corr,
        "steps": steps,
        "kiln_bench": {"graph": kg, "nograph": kn},
        "hf_bench": hf,
        "env": text(os.path.join(raw, "env.txt")),
        "build": text(os.path.join(raw, "build-info.txt")),
        "targets_txt": text(os.path.join(raw, "targets.txt")),
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)

    md = ["# Kiln CUDA harness results", ""]
    gpu = hf.get("gpu") or next((k.get("device") for k in (kg, kn) if k.get("device")), "unknown GPU")
    md.append(f"GPU: {gpu}. Model: {results['model']}. Prompt 128, 128 new tokens, batch 1, greedy.")
    md.append("")
    md.append(f"Roofline: {fmt(bw, '.0f')} GB/s ({'torch device copy' if bw_torch else 'kiln measurement'}) ÷ "
              f"{fmt(bpt and bpt / 1e9, '.3f')} GB/token = **{fmt(roofline)} tok/s**"
              + (f" (kiln's own bandwidth measurement: {fmt(bw_kiln, '.0f')} GB/s)" if bw_kiln and bw_torch else ""))
    md.append("")
    md.append("| engine | decode tok/s | % of roofline | prefill tok/s | notes |")
    md.append("|---|---|---|---|---|")
    for r in rows:
        note = r["note"] + (f" **error:** {r['error']}" if r["error"] else "")
        md.append(f"| {r['engine']} | {fmt(r['decode_tok_per_s'])} | {fmt(r['roofline_fraction'] and 100 * r['roofline_fraction'], '.0f')}"
                  f"{'%' if r['roofline_fraction'] else ''} | {fmt(r['prefill_tok_per_s'], '.0f')} | {note} |")
    md.append("")
    md.append("Targets: " + ", ".join(f"{k}: {'—' if v is None else ('PASS' if v else 'FAIL')}" for k, v in targets.items()))
    md.append("")
    md.append("## Correctness (max over rows of ‖test − ref‖ / ‖ref‖)")
    md.append("")
    md.append("| comparison | max rel L2 | threshold | argmax agree | greedy tokens equal | result |")
    md.append("|---|---|---|---|---|---|")
    for c in corr:
        res = "PASS" if c.get("pass") else ("FAIL" + (f": {c['error']}" if c.get("error") else ""))
        if c.get("argmax_mismatch_not_tie"):
            res += f" ({c['argmax_mismatch_not_tie']} argmax mismatches beyond ties)"
        md.append(f"| {c['label']} | {fmt(c.get('max_rel_l2'), '.2e')} | {c['threshold']:.0e} | "
                  f"{c.get('argmax_agree', '—')} | {c.get('tokens_equal', '—')} | {res} |")
    if not corr:
        md.append("| (no comparisons ran) | | | | | |")
    md.append("")
    bad = [s for s in steps if s.get("status") != "ok"]
    md.append(f"## Steps: {len(steps) - len(bad)} of {len(steps)} ok")
    if bad:
        md.append("")
        md.extend(f"- {s['step']}: {s['status']} (rc {s.get('rc')}, {s.get('seconds')} s)" for s in bad)
    slow = sorted(steps, key=lambda s: -(s.get("seconds") or 0))[:8]
    md.append("")
    md.append("Slowest: " + ", ".join(f"{s['step']} {s.get('seconds')} s" for s in slow))
    md.append("")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
