#!/usr/bin/env python3
"""Compare the logits of two runs of one model, and make Hugging Face reference logits.

Inputs are `kiln logits ART --ids ... --decode N --out FILE.json` reports:
    {"tokens": [every token fed, in order], "rows": [{"position": p, "logits": [vocab floats]}]}
(row 0: the logits after the prefill of --ids; then one row per greedy decode step).

    compare_logits.py diff TEST.json REF.json --threshold 1e-4 --label NAME [--append FILE.jsonl]
        Per row rel_l2 = ||test - ref|| / ||ref||; reports the max over rows, and whether the greedy
        (argmax) tokens agree. Only rows whose whole token prefix is the same in both runs are
        compared: once two runs choose different greedy tokens they no longer see the same inputs.
        PASS: every compared value finite, max rel_l2 <= threshold, and every argmax mismatch a
        near-tie (the reference's top-2 margin within twice the row's largest difference).
        Exit status 0 on PASS, 1 otherwise; --append adds one JSON record per call.

    compare_logits.py hf [--device cuda] [--dtype float32] MODEL KILN.json OUT.json [MODEL KILN.json OUT.json ...]
        Runs transformers' AutoModelForCausalLM on MODEL (a Hugging Face folder), fed KILN.json's
        "tokens" in one forward, and writes the logits at KILN.json's row positions to OUT.json in
        the same format. Several triples share one process (one torch import, one CUDA context).
        A triple that fails is reported and skipped; exit status 1 if any failed.

Only numpy (diff) and torch + transformers (hf).
"""
import argparse
import json
import sys
import time
import traceback

import numpy as np


def load(path):
    with open(path) as f:
        r = json.load(f)
    rows = {int(row["position"]): np.asarray(row["logits"], dtype=np.float64) for row in r["rows"]}
    return [int(t) for t in r["tokens"]], rows


def diff(test_path, ref_path, threshold, label):
    rec = {"label": label, "test": test_path, "ref": ref_path, "threshold": threshold, "pass": False, "error": None}
    try:
        t_tokens, t_rows = load(test_path)
        r_tokens, r_rows = load(ref_path)
    except FileNotFoundError as e:  # a missing or malformed report is a failed comparison, not a crash
        rec["error"] = f"missing {e.filename.rsplit('/', 1)[-1]}"
        return rec
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"
        return rec
    n = min(len(t_tokens), len(r_tokens))
    first_div = next((i for i in range(n) if t_tokens[i] != r_tokens[i]), None)
    if first_div is None and len(t_tokens) != len(r_tokens):
        first_div = n
    rec["tokens_equal"] = first_div is None
    rec["first_token_divergence"] = first_div
    rels, abss, compared, skipped, agree, bad_mismatch, nonfinite = [], [], 0, 0, 0, 0, 0
    for p in sorted(r_rows):
        if p not in t_rows or (first_div is not None and p >= first_div):
            skipped += 1
            continue
        a, b = t_rows[p], r_rows[p]
        if a.shape != b.shape:
            rec["error"] = f"position {p}: vocab sizes differ ({a.size} vs {b.size})"
            return rec
        compared += 1
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            nonfinite += 1
            continue
        d = np.abs(a - b)
        rels.append(float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)))
        abss.append(float(d.max()))
        if int(a.argmax()) == int(b.argmax()):
            agree += 1
        else:
            top2 = np.sort(b)[-2:]
            if top2[1] - top2[0] > 2 * d.max():
                bad_mismatch += 1
    rec.update(
        rows_compared=compared,
        rows_skipped=skipped,
        nonfinite_rows=nonfinite,
        max_rel_l2=max(rels) if rels else None,
        mean_rel_l2=float(np.mean(rels)) if rels else None,
        max_abs=max(abss) if abss else None,
        argmax_agree=f"{agree}/{compared}",
        argmax_mismatch_not_tie=bad_mismatch,
    )
    if compared == 0:
        rec["error"] = "no rows to compare"
    rec["pass"] = bool(compared > 0 and nonfinite == 0 and rels and max(rels) <= threshold and bad_mismatch == 0)
    return rec


def dtype_kw(transformers, dtype):
    """from_pretrained's dtype argument: `dtype` since transformers 4.56, `torch_dtype` before."""
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def hf(triples, device, dtype_name):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, dtype_name)
    torch.backends.cuda.matmul.allow_tf32 = False  # a true f32 reference
    torch.backends.cudnn.allow_tf32 = False
    failed = 0
    for model_dir, kiln_json, out_json in triples:
        t0 = time.time()
        try:
            tokens, rows = load(kiln_json)
            positions = sorted(rows)
            model = AutoModelForCausalLM.from_pretrained(model_dir, **dtype_kw(transformers, dtype), attn_implementation="eager")
            model = model.to(device).eval()
            ids = torch.tensor([tokens[: positions[-1] + 1]], device=device)
            with torch.no_grad():
                logits = model(input_ids=ids, use_cache=False).logits[0].float().cpu().numpy()
            report = {
                "model": model_dir,
                "device": f"transformers {transformers.__version__} {type(model).__name__} {device} {dtype_name}",
                "tokens": tokens,
                "rows": [{"position": p, "logits": logits[p].tolist()} for p in positions],
            }
            with open(out_json, "w") as f:
                json.dump(report, f)
            print(f"hf: {model_dir} -> {out_json} ({type(model).__name__}, {len(positions)} rows, {time.time() - t0:.1f} s)")
            del model
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        except Exception:
            failed += 1
            print(f"hf: FAILED on {model_dir} ({kiln_json}):\n{traceback.format_exc()}", file=sys.stderr)
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("diff")
    d.add_argument("test")
    d.add_argument("ref")
    d.add_argument("--threshold", type=float, required=True)
    d.add_argument("--label", default=None)
    d.add_argument("--append", default=None, help="append the JSON record to this file")
    h = sub.add_parser("hf")
    h.add_argument("--device", default="cuda")
    h.add_argument("--dtype", default="float32")
    h.add_argument("triples", nargs="+", help="MODEL KILN.json OUT.json, repeated")
    a = ap.parse_args()

    if a.cmd == "diff":
        rec = diff(a.test, a.ref, a.threshold, a.label or f"{a.test} vs {a.ref}")
        if a.append:
            with open(a.append, "a") as f:
                f.write(json.dumps(rec) + "\n")
        rel = rec.get("max_rel_l2")
        print(
            f"{'PASS' if rec['pass'] else 'FAIL'} {rec['label']}: max rel_l2 "
            f"{'n/a' if rel is None else f'{rel:.2e}'} (threshold {a.threshold:.0e}), "
            f"argmax {rec.get('argmax_agree', 'n/a')}, tokens_equal {rec.get('tokens_equal')}"
            + (f", {rec['nonfinite_rows']} rows with NaN/inf" if rec.get("nonfinite_rows") else "")
            + (f", error: {rec['error']}" if rec["error"] else "")
        )
        sys.exit(0 if rec["pass"] else 1)
    if len(a.triples) % 3:
        ap.error("hf takes MODEL KILN.json OUT.json triples")
    t = a.triples
    sys.exit(1 if hf([t[i : i + 3] for i in range(0, len(t), 3)], a.device, a.dtype) else 0)


if __name__ == "__main__":
    main()
