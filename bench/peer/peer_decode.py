"""Peer for decoding speed: Hugging Face generate (greedy, KV cache) on the same random-weight LLaMA shape as
quanta-bench's decode measurement: batch 1, 128-token prompt, 128 new tokens, bf16."""
import os, time, json, torch
from transformers import LlamaConfig, LlamaForCausalLM
SHAPES = {"tinyllama": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4, vocab_size=32000),
          "llama7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)}
shape = os.environ.get("SHAPE", "tinyllama")
torch.manual_seed(0)
with torch.device("cuda"):
    m = LlamaForCausalLM(LlamaConfig(**SHAPES[shape], max_position_embeddings=4096)).to(torch.bfloat16).eval()
ids = torch.randint(3, 32000, (1, 128), device="cuda")
kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
m.generate(ids, max_new_tokens=8, min_new_tokens=8, **kw); torch.cuda.synchronize()
t0 = time.perf_counter(); out = m.generate(ids, max_new_tokens=128, min_new_tokens=128, **kw); torch.cuda.synchronize()
n = out.shape[1] - ids.shape[1]; r = dict(shape=shape, new_tokens=n, decode_tokens_per_s=round(n / (time.perf_counter() - t0), 1))
print("decode", json.dumps(r), flush=True)
json.dump(r, open(os.path.join(os.environ.get("OUT", "/tmp"), f"peer_decode_{shape}.json"), "w"))
