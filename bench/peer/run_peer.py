"""Runs the peer benchmark (bench/peer/peer_bench.py: HF transformers + PEFT, a verbatim copy of the project's peer
script) and records, for every configuration, BOTH torch.cuda.max_memory_allocated (what the script prints) and
max_memory_reserved, and the .NET side's own measure: device memory in use (cudaMemGetInfo, as nvidia-smi) minus what was in
use right after the CUDA context started, read at the same point (end of the timed steps, model still alive).
SKIP=name1,name2 leaves configurations out (in memory only; the file is not changed) to save GPU time."""
import os, sys, runpy, json, torch
src_path = os.path.join(os.path.dirname(__file__), "peer_bench.py")
src = open(src_path).read()
# shapes the copied script does not list (it stays verbatim): LLaMA-3-8B's, as bench/QuanTA.Bench/LlamaShapes.cs has it
src = src.replace("SHAPES = {", 'SHAPES = {"llama3-8b": (dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, '
                  'num_attention_heads=32, num_key_value_heads=8, vocab_size=128256), [16, 8, 8, 4]), ', 1)
for name in filter(None, os.environ.get("SKIP", "").split(",")):
    src = "\n".join(l for l in src.splitlines() if not l.startswith(f'run("{name}"'))
allocated, used = [], []
torch.zeros(1, device="cuda"); torch.cuda.synchronize()
def _used(): free, total = torch.cuda.mem_get_info(); return total - free
context = _used()                                   # CUDA context + libtorch start-up, as the .NET bench's baseline
_orig = torch.cuda.max_memory_allocated
def _patched(*a, **k):
    allocated.append(round(_orig(*a, **k) / 2**30, 2))
    torch.cuda.synchronize(); used.append(round((_used() - context) / 2**30, 2))
    return torch.cuda.max_memory_reserved(*a, **k)
torch.cuda.max_memory_allocated = _patched
g = {"__name__": "__main__", "__file__": src_path}
exec(compile(src, src_path, "exec"), g)
res = g["res"]
for (name, r), alloc, u in zip(res.items(), allocated, used):
    r["peak_gib_reserved"] = r.pop("peak_gib"); r["peak_gib_allocated"] = alloc; r["peak_gib_device_used_minus_context"] = u
out = os.path.join(os.environ.get("OUT", "/tmp"), f"peer_torch_{g['shape']}.json")
json.dump(dict(res, gpu=torch.cuda.get_device_name(), torch=torch.__version__), open(out, "w"), indent=1)
print(json.dumps(res), flush=True)
