#!/usr/bin/env python3
"""Peer for samples/Chat's streaming figures: Hugging Face transformers streaming the same chat prompts.

Loads a model folder (default: the embedded samples/Models/wordnet-llama-tiny), renders each conversation
[system "Define the word.", user <word>] with tokenizer.apply_chat_template(add_generation_prompt=True), and streams a
greedy answer of up to --max-new-tokens with model.generate + TextIteratorStreamer (the way HF apps stream). Prints and
writes (to $OUT/chat_stream_peer.json when $OUT is set) the median time to the first text piece and tokens/s, the two
figures samples/Chat prints for QuanTAChatClient, on the same words (the first six of the WordNet test split).
"""
import argparse, gzip, json, os, statistics, threading, time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ap = argparse.ArgumentParser()
ap.add_argument("--model", default=os.path.join(ROOT, "samples", "Models", "wordnet-llama-tiny"))
ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
ap.add_argument("--max-new-tokens", type=int, default=24)
ap.add_argument("--words", type=int, default=6)
a = ap.parse_args()

tok = AutoTokenizer.from_pretrained(a.model)
dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(a.device).eval()
with gzip.open(os.path.join(ROOT, "samples", "Data", "wordnet", "definition-test.tsv.gz"), "rt", encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f][1:]
words = [r[0].rstrip(":") for r in rows[: a.words]]

def stream(word):
    msgs = [{"role": "system", "content": "Define the word."}, {"role": "user", "content": word}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_tensors="pt", return_dict=True)["input_ids"].to(a.device)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    out = {}
    def run():
        with torch.no_grad():
            out["ids"] = model.generate(ids, max_new_tokens=a.max_new_tokens, do_sample=False, streamer=streamer,
                                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    t0 = time.perf_counter(); first = None; text = ""
    th = threading.Thread(target=run); th.start()
    for piece in streamer:
        if first is None and piece:
            first = time.perf_counter() - t0
        text += piece
    th.join(); total = time.perf_counter() - t0
    return first, out["ids"].shape[1] - ids.shape[1], total, text

stream(words[0])                                                  # warm-up (not counted)
firsts, tokens, seconds = [], 0, 0.0
for w in words:
    first, n, total, text = stream(w)
    print(f"user: {w}\nassistant:{text}")
    if first is not None: firsts.append(first * 1000)
    tokens += n; seconds += total
result = {"peer": "transformers generate + TextIteratorStreamer", "transformers": __import__("transformers").__version__,
          "torch": torch.__version__, "device": a.device, "dtype": str(dtype), "model": os.path.basename(a.model.rstrip("/")),
          "words": len(words), "first_token_ms_median": statistics.median(firsts) if firsts else None,
          "tokens": tokens, "tokens_per_s": tokens / seconds}
print(json.dumps(result))
if os.environ.get("OUT"):
    with open(os.path.join(os.environ["OUT"], "chat_stream_peer.json"), "w") as f: json.dump(result, f, indent=2)
