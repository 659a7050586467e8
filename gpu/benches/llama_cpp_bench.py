#!/usr/bin/env python3
"""Baseline CPU speed of llama.cpp (via llama-cpp-python) on the fixture GGUF, plus a cross-check
of llama.cpp's outputs against the transformers reference (gpu/tests/fixtures/gguf).

Usage
-----
    python gpu/benches/llama_cpp_bench.py /path/to/SmolLM2-135M-Instruct.Q4_1.gguf [--threads 2] [--reps 3]

`cargo bench -p olc-gpu --bench gguf` runs it beside OLC when OLC_LLAMA_CPP_PYTHON names a
Python that has llama-cpp-python.

Building llama-cpp-python (it compiles llama.cpp from source). The default native build
(-march=native) uses AMX kernels, which crash on the project's VMs, so pin the ISA instead:

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX2=ON \\
        -DGGML_FMA=ON -DGGML_F16C=ON" CMAKE_BUILD_PARALLEL_LEVEL=2 \\
        nice -n 10 /tmp/refvenv/bin/pip install --no-cache-dir llama-cpp-python

What it measures, each repeated --reps times (first a warm-up run that is not counted):
* prefill: one `eval` of a 128-token prompt (n_batch=128, so a single batch), tokens/s;
* decode: 128 greedy tokens generated one at a time after a short prompt (batch 1), tokens/s.
Both from wall-clock time around `Llama.eval` (argmax on the host is included in decode but is
~20 us a token) and, where the binding exposes it, llama.cpp's own `llama_perf_context` counters.

Cross-check (with gpu/tests/fixtures/gguf/gguf_reference.safetensors): llama.cpp's last-position
logits for each reference prompt vs transformers' float32 logits (max abs diff, argmax equality),
and how many of the 32 greedy tokens agree. llama.cpp quantizes activations to Q8 for Q4_1/Q8_0
matmuls, so small differences are expected; this gives a feel for a sane tolerance.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import llama_cpp
from llama_cpp import Llama

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "gguf")

FILLER = (
    "The history of computing is a story of steadily shrinking machines and growing ambitions. "
    "Early computers filled entire rooms, consumed enormous amounts of power, and were programmed "
    "by rewiring panels or feeding in stacks of punched cards. "
)


def sync(llm):
    try:
        llama_cpp.llama_synchronize(llm.ctx)
    except Exception:
        pass


def perf(llm):
    # llama.cpp books a batch's time/tokens at the next synchronize, so synchronize first.
    sync(llm)
    try:
        d = llama_cpp.llama_perf_context(llm.ctx)
        return {"t_p_eval_ms": d.t_p_eval_ms, "n_p_eval": d.n_p_eval, "t_eval_ms": d.t_eval_ms, "n_eval": d.n_eval}
    except Exception:
        return None


def perf_reset(llm):
    try:
        llama_cpp.llama_perf_context_reset(llm.ctx)
    except Exception:
        pass


def last_logits(llm):
    # With logits_all=False, Llama.eval does not fill llm.scores: read the last output row directly.
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32)


def prefill_once(llm, tokens):
    llm.reset()
    perf_reset(llm)
    t0 = time.perf_counter()
    llm.eval(tokens)
    sync(llm)
    dt = time.perf_counter() - t0
    return len(tokens) / dt, perf(llm)


def decode_once(llm, prompt, n_new):
    llm.reset()
    llm.eval(prompt)
    perf_reset(llm)
    t0 = time.perf_counter()
    out = []
    for _ in range(n_new):
        nxt = int(np.argmax(last_logits(llm)))
        out.append(nxt)
        llm.eval([nxt])
    sync(llm)
    dt = time.perf_counter() - t0
    return n_new / dt, perf(llm), out


def cross_check(llm):
    st_path = os.path.join(HERE, "gguf_reference.safetensors")
    js_path = os.path.join(HERE, "gguf_reference.json")
    if not (os.path.exists(st_path) and os.path.exists(js_path)):
        return None
    from safetensors.numpy import load_file

    ref = load_file(st_path)
    meta = json.load(open(js_path))
    res = []
    for case in meta["cases"]:
        name = case["name"]
        prompt = [int(t) for t in ref[f"{name}.prompt"]]
        llm.reset()
        llm.eval(prompt)
        got = last_logits(llm)
        want = ref[f"{name}.logits"]
        greedy = []
        for _ in range(32):
            nxt = int(np.argmax(last_logits(llm)))
            greedy.append(nxt)
            llm.eval([nxt])
        ref_greedy = [int(t) for t in ref[f"{name}.greedy"]]
        agree = next((i for i, (a, b) in enumerate(zip(greedy, ref_greedy)) if a != b), 32)
        res.append({
            "case": name,
            "max_abs_diff_last_logits": float(np.max(np.abs(got - want))),
            "mean_abs_diff_last_logits": float(np.mean(np.abs(got - want))),
            "argmax_equal": int(np.argmax(got)) == int(np.argmax(want)),
            "greedy_prefix_agree": agree,
            "llama_cpp_greedy_text": llm.detokenize(greedy).decode("utf-8", "replace"),
        })
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-prompt", type=int, default=128)
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    llm = Llama(
        model_path=a.model,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        n_ctx=512,
        n_batch=128,
        logits_all=False,
        verbose=False,
    )
    text = FILLER * 8
    toks = llm.tokenize(text.encode(), add_bos=False, special=False)
    assert len(toks) >= a.n_prompt, len(toks)
    prompt128 = toks[: a.n_prompt]
    short = toks[:8]

    prefill_once(llm, prompt128)  # warm-up
    decode_once(llm, short, 16)

    pre, dec, pre_perf, dec_perf = [], [], [], []
    for _ in range(a.reps):
        tps, p = prefill_once(llm, prompt128)
        pre.append(tps)
        pre_perf.append(p)
    for _ in range(a.reps):
        tps, p, _ = decode_once(llm, short, a.n_gen)
        dec.append(tps)
        dec_perf.append(p)

    result = {
        "llama_cpp_python": getattr(llama_cpp, "__version__", None),
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace"),
        "threads": a.threads,
        "prefill_tokens": a.n_prompt,
        "prefill_tok_s": [round(x, 1) for x in pre],
        "prefill_tok_s_median": round(statistics.median(pre), 1),
        "decode_tokens": a.n_gen,
        "decode_tok_s": [round(x, 1) for x in dec],
        "decode_tok_s_median": round(statistics.median(dec), 1),
        "llama_perf_prefill": pre_perf,
        "llama_perf_decode": dec_perf,
    }
    # llama.cpp's own counters -> tokens/s, where available
    try:
        result["perf_prefill_tok_s"] = [round(1000 * p["n_p_eval"] / p["t_p_eval_ms"], 1) for p in pre_perf]
        result["perf_decode_tok_s"] = [round(1000 * p["n_eval"] / p["t_eval_ms"], 1) for p in dec_perf]
    except Exception:
        pass
    result["cross_check_vs_transformers"] = cross_check(llm)
    print(json.dumps(result, indent=1, ensure_ascii=False))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(main())
