#!/usr/bin/env python3
"""Outside check of `quanta export` (run where transformers, PEFT and gguf-py are installed, e.g. the GPU host).

Reads the folder written by tools/export/make-export-check.sh and, for each adapter (lora, quanta), loads
  - the merged fp32 Hugging Face folder with transformers' AutoModelForCausalLM,
  - the LoRA PEFT folder with PeftModel.from_pretrained over the base (QuanTA has no PEFT tuner: skipped, said so),
  - the GGUF files with transformers' GGUF loader (from_pretrained(..., gguf_file=...), which uses gguf-py),
recomputes the per-token log-probabilities of the probe text and prints the largest difference from this project's
(quanta score). Writes a JSON report to --out; exit 1 when a loaded artefact differs beyond its tolerance.
"""
import argparse, importlib, json, os, sys, traceback
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--dir", required=True)
ap.add_argument("--base", required=True)
ap.add_argument("--out", required=True)
a = ap.parse_args()

from transformers import AutoModelForCausalLM

def logprobs(model, ids):
    with torch.no_grad():
        lp = model(torch.tensor([ids])).logits.float().log_softmax(-1)[0, :-1]
    return lp.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1).tolist()

def load(kind, method, extra):
    d = a.dir
    if kind == "hf":
        return AutoModelForCausalLM.from_pretrained(f"{d}/{method}-hf", dtype=torch.float32)
    if kind == "peft":
        from peft import PeftModel
        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(a.base, dtype=torch.float32), f"{d}/{method}-peft")
    if kind == "gguf":
        return AutoModelForCausalLM.from_pretrained(f"{d}/{method}-gguf-{extra}", gguf_file="model.gguf", dtype=torch.float32)

results = []
for method in ["lora", "quanta"]:
    ours = json.load(open(f"{a.dir}/{method}-score-hf.json"))
    ids, want = ours["token_ids"], ours["logprobs"]
    for kind, extra, tol in [("hf", None, 1e-4), ("peft", None, 1e-4), ("gguf", "f32", 1e-3), ("gguf", "q8_0", 5e-2)]:
        name = f"{method}/{kind}" + (f"-{extra}" if extra else "")
        if kind == "peft" and method == "quanta":
            results.append({"name": name, "skipped": "PEFT has no QuanTA tuner; the folder loads only in this project"})
            print(name, "skipped (no PEFT tuner for QuanTA)"); continue
        try:
            got = logprobs(load(kind, method, extra).eval(), ids)
            diff = max(abs(x - y) for x, y in zip(got, want))
            r = {"name": name, "max_abs_logprob_diff": diff, "tolerance": tol, "ok": diff <= tol}
        except Exception as e:
            r = {"name": name, "ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-1500:]}
        print(json.dumps({k: v for k, v in r.items() if k != "trace"}), flush=True)
        results.append(r)

versions = {}
for m in ["torch", "transformers", "peft", "gguf"]:
    try: versions[m] = importlib.import_module(m).__version__
    except Exception as e: versions[m] = None
print(versions)
tmp = a.out + ".tmp"
with open(tmp, "w") as f: json.dump({"versions": versions, "results": results}, f, indent=2)
os.replace(tmp, a.out)
sys.exit(0 if all(r.get("ok", True) for r in results) else 1)
