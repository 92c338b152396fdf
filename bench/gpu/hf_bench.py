#!/usr/bin/env python3
"""Hugging Face transformers' decode speed on one GPU, and the GPU's memory bandwidth.

    hf_bench.py MODEL --out OUT.json [--prompt-len 128] [--gen 128] [--repeat 3]
                [--engines eager,compile] [--bytes-per-token B]

Phases, each written to OUT.json as soon as it ends (a later phase that fails or is killed by a
timeout leaves the earlier results in place):
  bandwidth  a 2 GiB device-to-device copy through torch: (bytes read + bytes written) / time,
             median of 20 after 3 warm-ups, timed with CUDA events.
  eager      transformers in bf16, batch 1, greedy, default (dynamic) KV cache, no compilation.
  compile    the same with a static KV cache and torch.compile(mode="reduce-overhead",
             fullgraph=True) on the decode step: first transformers' own path (a static cache
             makes `generate` compile the forward with the CompileConfig given); if that raises,
             the documented manual form `model.forward = torch.compile(model.forward, ...)`.
             The warm-up runs (compilation, CUDA-graph capture) are timed separately.

Every run generates exactly --gen tokens (min_new_tokens = max_new_tokens) after a --prompt-len
random prompt. A streamer timestamps, after a device synchronize, the prompt (before the prefill)
and each new token: prefill = first token - prompt, decode tok/s = (gen - 1) / (last token - first
token). Each engine keeps its best run (as `kiln bench --repeat` does) and reports the median too.
With --bytes-per-token (Kiln's decode_bytes_per_token), the roofline is bandwidth / bytes.
"""
import argparse
import json
import os
import statistics
import sys
import time
import traceback

import torch


def write(path, results):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2)
    os.replace(tmp, path)


def bandwidth(nbytes=2 << 30, warmup=3, iters=20):
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").uniform_()
    dst = torch.empty_like(src)
    for _ in range(warmup):
        dst.copy_(src)
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    ok = bool(torch.equal(dst, src))
    del src, dst
    torch.cuda.empty_cache()
    med = statistics.median(times)
    return {"bytes_moved": 2 * nbytes, "median_s": med, "gb_s": 2 * nbytes / med / 1e9,
            "best_gb_s": 2 * nbytes / min(times) / 1e9, "copy_correct": ok}


class Stamps:
    """A generate() streamer: a host timestamp, after a device sync, at every put()."""

    def __init__(self):
        self.t = []

    def put(self, value):
        torch.cuda.synchronize()
        self.t.append(time.perf_counter())

    def end(self):
        pass


def timed_generate(model, ids, gen, **kw):
    s = Stamps()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=gen, min_new_tokens=gen,
                         do_sample=False, streamer=s, **kw)
    torch.cuda.synchronize()
    total = time.perf_counter() - t0
    new = out.shape[1] - ids.shape[1]
    r = {"total_s": total, "new_tokens": int(new), "stamps": len(s.t)}
    if len(s.t) == 1 + new and new >= 2:  # the prompt, then each new token
        r["prefill_s"] = s.t[1] - s.t[0]
        r["decode_s"] = s.t[-1] - s.t[1]
        r["decode_tok_per_s"] = (new - 1) / r["decode_s"]
        r["prefill_tok_per_s"] = ids.shape[1] / r["prefill_s"]
    return r


def run_engine(model, ids, args, warmup, **kw):
    warm = []
    for _ in range(warmup):
        t0 = time.perf_counter()
        timed_generate(model, ids, args.gen, **kw)
        warm.append(time.perf_counter() - t0)
    runs = [timed_generate(model, ids, args.gen, **kw) for _ in range(args.repeat)]
    good = [r for r in runs if "decode_tok_per_s" in r]
    res = {"warmup_s": warm, "runs": runs}
    if good:
        best = max(good, key=lambda r: r["decode_tok_per_s"])
        res.update(
            decode_tok_per_s=best["decode_tok_per_s"],
            prefill_tok_per_s=max(r["prefill_tok_per_s"] for r in good),
            decode_tok_per_s_median=statistics.median(r["decode_tok_per_s"] for r in good),
        )
    else:
        res["error"] = f"the streamer saw {runs[0]['stamps']} stamps for {runs[0]['new_tokens']} tokens"
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engines", default="eager,compile")
    ap.add_argument("--bytes-per-token", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM

    from compare_logits import dtype_kw

    res = {"model": args.model, "prompt_len": args.prompt_len, "gen": args.gen, "repeat": args.repeat,
           "torch": torch.__version__, "transformers": transformers.__version__,
           "gpu": torch.cuda.get_device_name(0), "engines": {}}
    write(args.out, res)

    t0 = time.perf_counter()
    try:
        res["bandwidth"] = bandwidth()
        print(f"bandwidth: {res['bandwidth']['gb_s']:.0f} GB/s (device copy, read + write)")
    except Exception:
        res["bandwidth"] = {"error": traceback.format_exc(limit=3)}
    res["bandwidth_seconds"] = time.perf_counter() - t0
    write(args.out, res)

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, **dtype_kw(transformers, torch.bfloat16))
    model = model.to("cuda").eval()
    res["load_seconds"] = time.perf_counter() - t0
    res["params"] = sum(p.numel() for p in model.parameters())
    res["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(1, model.config.vocab_size, (1, args.prompt_len), generator=g).to("cuda")
    write(args.out, res)

    bw = res["bandwidth"].get("gb_s")
    for engine in args.engines.split(","):
        t0 = time.perf_counter()
        print(f"{engine}: running", flush=True)
        try:
            if engine == "eager":
                r = run_engine(model, ids, args, warmup=1)
            elif engine == "compile":
                r = compile_engine(model, ids, args, res, engine)
            else:
                raise ValueError(f"unknown engine {engine}")
        except Exception:
            r = {"error": traceback.format_exc(limit=6)}
        r["seconds"] = time.perf_counter() - t0
        if bw and args.bytes_per_token and "decode_tok_per_s" in r:
            r["roofline_tok_per_s"] = bw * 1e9 / args.bytes_per_token
            r["roofline_fraction"] = r["decode_tok_per_s"] / r["roofline_tok_per_s"]
        res["engines"][engine] = r
        write(args.out, res)
        if "decode_tok_per_s" in r:
            print(f"{engine}: decode {r['decode_tok_per_s']:.1f} tok/s, prefill {r['prefill_tok_per_s']:.0f} tok/s "
                  f"({r['seconds']:.0f} s incl. warm-up {sum(r['warmup_s']):.0f} s)")
        else:
            print(f"{engine}: FAILED: {r.get('error')}", file=sys.stderr)
    print(f"wrote {args.out}")


def compile_engine(model, ids, args, res, key):
    """Static KV cache + torch.compile(reduce-overhead, fullgraph); see the module doc."""
    from transformers import GenerationConfig  # noqa: F401  (fails early on a broken install)

    model.generation_config.cache_implementation = "static"
    attempts = []
    try:
        from transformers import CompileConfig
        model.generation_config.compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead")
        r = run_engine(model, ids, args, warmup=2)
        r["style"] = "generate's own compile of the forward (static cache, CompileConfig(fullgraph=True, mode='reduce-overhead'))"
        return r
    except Exception:
        attempts.append(traceback.format_exc(limit=6))
        print(f"{key}: transformers' own compile failed, trying model.forward = torch.compile(...):\n{attempts[-1]}",
              file=sys.stderr)
        res["engines"][key] = {"error_auto": attempts[-1]}
        write(args.out, res)
    torch._dynamo.reset()
    model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    kw = {"disable_compile": True} if hasattr(model.generation_config, "disable_compile") else {}
    r = run_engine(model, ids, args, warmup=2, **kw)
    r["style"] = "model.forward = torch.compile(model.forward, mode='reduce-overhead', fullgraph=True), static cache"
    r["error_auto"] = attempts[0]
    return r


if __name__ == "__main__":
    main()
