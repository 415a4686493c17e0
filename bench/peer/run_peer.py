"""Runs the peer benchmark (bench/peer/peer_bench.py: HF transformers + PEFT, a verbatim copy of the project's peer
script) and records, for every configuration, BOTH torch.cuda.max_memory_allocated (what the script prints) and
max_memory_reserved (comparable with the .NET side, which can only read device memory in use minus the CUDA context).
SKIP=name1,name2 leaves configurations out (in memory only; the file is not changed) to save GPU time."""
import os, sys, runpy, json, torch
src_path = os.path.join(os.path.dirname(__file__), "peer_bench.py")
src = open(src_path).read()
for name in filter(None, os.environ.get("SKIP", "").split(",")):
    src = "\n".join(l for l in src.splitlines() if not l.startswith(f'run("{name}"'))
allocated = []
_orig = torch.cuda.max_memory_allocated
def _patched(*a, **k):
    allocated.append(round(_orig(*a, **k) / 2**30, 2))
    return torch.cuda.max_memory_reserved(*a, **k)
torch.cuda.max_memory_allocated = _patched
g = {"__name__": "__main__", "__file__": src_path}
exec(compile(src, src_path, "exec"), g)
res = g["res"]
for (name, r), alloc in zip(res.items(), allocated):
    r["peak_gib_reserved"] = r.pop("peak_gib"); r["peak_gib_allocated"] = alloc
out = os.path.join(os.environ.get("OUT", "/tmp"), f"peer_torch_{g['shape']}.json")
json.dump(dict(res, gpu=torch.cuda.get_device_name(), torch=torch.__version__), open(out, "w"), indent=1)
print(json.dumps(res), flush=True)
