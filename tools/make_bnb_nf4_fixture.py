#!/usr/bin/env python3
"""Writes test/fixtures/llama-tiny-bnb-nf4: test/fixtures/llama-tiny saved the way transformers + bitsandbytes save a
4-bit NF4 model with double quantization (the "...-bnb-4bit" folders), using only the Python standard library.

Layout, from bitsandbytes (functional.py QuantState.as_dict(packed=True), utils.pack_dict_to_tensor, and the reference
backend backends/default/ops.py quantize_4bit / quantize_blockwise) and transformers' quantization_config:
  X.weight                                   uint8 (ceil(n/2), 1): NF4 codes, first value of a pair in the high nibble
  X.weight.absmax                            uint8 (blocks): absmax of each 64-block, minus offset, 8-bit dynamic-quantized
  X.weight.quant_map                         fp32 (16): the NF4 levels
  X.weight.nested_absmax                     fp32 (ceil(blocks / 256)): absmax of each 256-block of (absmax - offset)
  X.weight.nested_quant_map                  fp32 (256): bitsandbytes' signed dynamic map
  X.weight.quant_state.bitsandbytes__nf4     uint8: UTF-8 JSON {quant_type, blocksize, dtype, shape, nested_blocksize,
                                             nested_dtype, nested_offset}
for the decoder layers' q/k/v/o/gate/up/down projections; embeddings, norms and lm_head stay fp32.
All arithmetic is rounded to float32 after every operation, as the torch reference does.

It also writes reference-dequant.safetensors: two weights dequantized here (fp32), which the C# tests compare against.
Usage: python3 tools/make_bnb_nf4_fixture.py   (from the repository root)
"""
import json
import os
import struct

SRC = "test/fixtures/llama-tiny"
DST = "test/fixtures/llama-tiny-bnb-nf4"
BLOCK, NESTED_BLOCK = 64, 256

# bitsandbytes functional.get_4bit_type("nf4")
NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


NF4 = [f32(v) for v in NF4]


def linspace_f32(start, end, steps):
    # ATen's linspace kernel: step in the output dtype, first half from start, second half from end
    start, end = f32(start), f32(end)
    step = f32(f32(end - start) / (steps - 1))
    half = steps // 2
    return [f32(start + f32(step * i)) if i < half else f32(end - f32(step * (steps - i - 1))) for i in range(steps)]


def dynamic_map():
    # bitsandbytes functional.create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)
    data = []
    for i in range(7):
        b = linspace_f32(0.1, 1, 2 ** i + 1)
        means = [f32(f32(b[j] + b[j + 1]) / 2.0) for j in range(len(b) - 1)]
        scale = 10 ** (-6 + i)
        data += [f32(scale * m) for m in means]
        data += [f32(-scale * m) for m in means]
    data += [0.0, 1.0]
    return sorted(data)


def bounds(code):
    return [f32(f32(code[i] + code[i + 1]) / 2) for i in range(len(code) - 1)]


def bucketize(x, bnds):
    # torch.bucketize(right=False): number of boundaries strictly below x
    lo, hi = 0, len(bnds)
    while lo < hi:
        mid = (lo + hi) // 2
        if bnds[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def quantize_blockwise(values, code, block):
    bnds = bounds(code)
    codes, absmax = [], []
    for s in range(0, len(values), block):
        blk = values[s:s + block]
        am = max(abs(v) for v in blk)
        absmax.append(am)
        inv = f32(1.0 / max(am, 1e-38))
        codes += [bucketize(min(1.0, max(-1.0, f32(v * inv))), bnds) for v in blk]
    return codes, absmax


def quantize_nf4(flat):
    codes, absmax = quantize_blockwise(flat, NF4, BLOCK)
    if len(codes) % 2:
        codes.append(7)
    packed = bytes((codes[i] << 4) | codes[i + 1] for i in range(0, len(codes), 2))
    offset = f32(sum(absmax) / len(absmax))
    dyn = dynamic_map()
    qabs, nested = quantize_blockwise([f32(a - offset) for a in absmax], dyn, NESTED_BLOCK)
    return packed, bytes(qabs), nested, offset, dyn


def dequantize_nf4(packed, qabs, nested, offset, dyn, n):
    absmax = [f32(f32(dyn[q] * nested[i // NESTED_BLOCK]) + offset) for i, q in enumerate(qabs)]
    out = []
    for j, b in enumerate(packed):
        for k, c in enumerate((b >> 4, b & 15)):
            i = 2 * j + k
            if i < n:
                out.append(f32(NF4[c] * absmax[i // BLOCK]))
    return out


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        assert v["dtype"] == "F32"
        out[k] = (v["shape"], list(struct.unpack(f"<{(b - a) // 4}f", body[a:b])))
    return out


def write_safetensors(path, tensors):
    # tensors: name -> (dtype, shape, bytes)
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.replace(tmp, path)


def f32_bytes(values):
    return struct.pack(f"<{len(values)}f", *values)


def main():
    os.makedirs(DST, exist_ok=True)
    src = read_safetensors(os.path.join(SRC, "model.safetensors"))
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    out, reference = {}, {}
    for name, (shape, values) in sorted(src.items()):
        if not (".layers." in name and name.split(".")[-2] in projections):
            out[name] = ("F32", shape, f32_bytes(values))
            continue
        packed, qabs, nested, offset, dyn = quantize_nf4(values)
        state = {"quant_type": "nf4", "blocksize": BLOCK, "dtype": "float32", "shape": shape,
                 "nested_blocksize": NESTED_BLOCK, "nested_dtype": "float32", "nested_offset": offset}
        state_bytes = json.dumps(state).encode("utf-8")
        out[name] = ("U8", [len(packed), 1], packed)
        out[name + ".absmax"] = ("U8", [len(qabs)], qabs)
        out[name + ".nested_absmax"] = ("F32", [len(nested)], f32_bytes(nested))
        out[name + ".nested_quant_map"] = ("F32", [256], f32_bytes(dyn))
        out[name + ".quant_map"] = ("F32", [16], f32_bytes(NF4))
        out[name + ".quant_state.bitsandbytes__nf4"] = ("U8", [len(state_bytes)], state_bytes)
        if name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
            reference[name] = ("F32", shape, f32_bytes(dequantize_nf4(packed, qabs, nested, offset, dyn, len(values))))
    write_safetensors(os.path.join(DST, "model.safetensors"), out)
    write_safetensors(os.path.join(DST, "reference-dequant.safetensors"), reference)

    config = json.load(open(os.path.join(SRC, "config.json")))
    config["quantization_config"] = {
        "_load_in_4bit": True, "_load_in_8bit": False, "bnb_4bit_compute_dtype": "float32",
        "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
        "llm_int8_enable_fp32_cpu_offload": False, "llm_int8_has_fp16_weight": False, "llm_int8_skip_modules": None,
        "llm_int8_threshold": 6.0, "load_in_4bit": True, "load_in_8bit": False, "quant_method": "bitsandbytes"}
    with open(os.path.join(DST, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    for extra in ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        with open(os.path.join(SRC, extra), "rb") as f, open(os.path.join(DST, extra), "wb") as g:
            g.write(f.read())


if __name__ == "__main__":
    main()
