"""Make tokenizer-variant fixtures and their reference ids, computed by Hugging Face tokenizers/transformers
(and sentencepiece) themselves, for the .NET HfTokenizer tests. Runs on the GPU machine's image (transformers 5.17,
tokenizers, sentencepiece); needs no network. Run from the repository root; writes $OUT/tokfix.tar.gz holding
fixtures/tok-*/ (tokenizer files + reference_tokenizer.json).

Variants (all derived from the byte-level BPE of test/fixtures/llama-tiny, made by ../shared/bench/make_fixtures.py):
  tok-llama3-style  LLaMA-3's Split regex + ByteLevel(use_regex=false), ignore_merges=true, whole words added to the
                    vocabulary without merges (so ignore_merges changes the result), <|begin_of_text|> template.
  tok-qwen2-style   Qwen2's Split regex (single digits), NFC normalizer, ByteLevel post-processor, ChatML tokens,
                    no bos, padding_side left.
  tok-gpt2-prefix   ByteLevel(add_prefix_space=true) with GPT-2's regex and an eos-suffix template.
  tok-sentencepiece a tiny SentencePiece BPE model (LLaMA settings: identity normalization, dummy prefix, byte
                    fallback, split digits) trained here by the sentencepiece library, saved by transformers'
                    LlamaTokenizer; references from AutoTokenizer and from sentencepiece itself.
"""
import copy, glob, json, os, sys, tarfile, traceback

from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

OUT = os.environ.get("OUT", "/tmp/out"); os.makedirs(OUT, exist_ok=True)
ROOT = "/tmp/tokfix/fixtures"; os.makedirs(ROOT, exist_ok=True)
BASE = json.load(open("test/fixtures/llama-tiny/tokenizer.json"))
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

TEXTS = [
    "bull: a formal proclamation",
    "the cat sat on",
    "somatosensory: of or relating to the",
    "Hello world! I'LL say it's 12345 or 3.14159 times, don't you?",
    "  leading spaces\tand\ttabs\nnew\n\nlines\r\n  trailing  ",
    "naïve café — Grüße, 日本語 and emoji 😀👍🏽!",
    "e\u0301 combining vs \u00e9 precomposed",
    "proclamation somatosensory relating formal",
    "{S1}text with {S2} inside{S3} and {N1} too",
    "",
]


def split(pattern):
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}


def template(prefix, suffix, ids):
    def items(toks):
        return [{"SpecialToken": {"id": t, "type_id": 0}} for t in toks]
    single = items(prefix) + [{"Sequence": {"id": "A", "type_id": 0}}] + items(suffix)
    pair = single + [{"Sequence": {"id": "B", "type_id": 1}}]
    return {"type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": {t: {"id": t, "ids": [ids[t]], "tokens": [t]} for t in prefix + suffix}}


def add_tokens(j, specs):
    """specs: list of (content, special); ids follow the largest id so far."""
    ids = {}
    n = max(max(j["model"]["vocab"].values()), max(a["id"] for a in j["added_tokens"])) + 1
    for content, special in specs:
        j["added_tokens"].append({"id": n, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                                  "normalized": not special, "special": special})
        ids[content] = n; n += 1
    return ids


def references(d, fill, pad_fallback=None):
    """Reference encodings by AutoTokenizer.from_pretrained(d), the way a user loads the folder."""
    tok = AutoTokenizer.from_pretrained(d)
    texts = [t.format(**fill) for t in TEXTS]
    with_special = [tok(t)["input_ids"] for t in texts]
    ref = {
        "tokenizer_class": type(tok).__name__,
        "texts": texts,
        "input_ids": with_special,
        "input_ids_no_special": [tok(t, add_special_tokens=False)["input_ids"] for t in texts],
        "decode_skip_special": [tok.decode(ids, skip_special_tokens=True) for ids in with_special],
        "decode_keep_special": [tok.decode(ids, skip_special_tokens=False) for ids in with_special],
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
        "padding_side": tok.padding_side, "vocab_len": len(tok),
    }
    if tok.pad_token is None and pad_fallback:
        tok.pad_token = pad_fallback
    for side in ["left", "right"]:
        tok.padding_side = side
        enc = tok(texts[:4], padding=True)
        ref["batch_" + side] = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    for side in ["left", "right"]:
        tok.truncation_side = side
        ref["truncate6_" + side] = tok(texts[:6], truncation=True, max_length=6)["input_ids"]
    json.dump(ref, open(os.path.join(d, "reference_tokenizer.json"), "w", encoding="utf-8"), indent=1, ensure_ascii=False)
    print(os.path.basename(d), ref["tokenizer_class"], "bos/eos/pad", ref["bos_token_id"], ref["eos_token_id"],
          ref["pad_token_id"], "len", ref["vocab_len"], "first", with_special[0])
    return ref


def save_fast(j, d, **special):
    os.makedirs(d, exist_ok=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(j)), **special)
    fast.save_pretrained(d)
    return fast


def llama3_style():
    j = copy.deepcopy(BASE)
    vocab = j["model"]["vocab"]
    n = max(vocab.values()) + 1
    for w in ["Ġproclamation", "Ġsomatosensory", "Ġrelating", "Ġformal", "Ġtimes"]:
        if w not in vocab:
            vocab[w] = n; n += 1  # whole words reachable only with ignore_merges
    ids = add_tokens(j, [("<|begin_of_text|>", True), ("<|end_of_text|>", True), ("<|eot_id|>", True), ("<think>", False)])
    j["model"]["ignore_merges"] = True
    j["pre_tokenizer"] = split(LLAMA3)
    j["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        template(["<|begin_of_text|>"], [], ids)]}
    d = os.path.join(ROOT, "tok-llama3-style")
    save_fast(j, d, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
    json.dump({"bos_token_id": ids["<|begin_of_text|>"], "eos_token_id": [ids["<|end_of_text|>"], ids["<|eot_id|>"]]},
              open(os.path.join(d, "generation_config.json"), "w"), indent=1)
    references(d, {"S1": "<|begin_of_text|>", "S2": "<|eot_id|>", "S3": "<|end_of_text|>", "N1": "<think>"},
               pad_fallback="<|end_of_text|>")


def qwen2_style():
    j = copy.deepcopy(BASE)
    add_tokens(j, [("<|im_start|>", True), ("<|im_end|>", True)])
    j["normalizer"] = {"type": "NFC"}
    j["pre_tokenizer"] = split(QWEN2)
    j["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    d = os.path.join(ROOT, "tok-qwen2-style")
    save_fast(j, d, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left")
    references(d, {"S1": "<|im_start|>", "S2": "<|im_end|>", "S3": "<|endoftext|>", "N1": "<|pad|>"})


def gpt2_prefix():
    j = copy.deepcopy(BASE)
    j["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    j["post_processor"] = template([], ["<|endoftext|>"], {"<|endoftext|>": 0})
    d = os.path.join(ROOT, "tok-gpt2-prefix")
    save_fast(j, d, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|pad|>")
    references(d, {"S1": "<|endoftext|>", "S2": "<|pad|>", "S3": "<|endoftext|>", "N1": "<|pad|>"})


def sentencepiece_tiny():
    import sentencepiece as spm
    files = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(spm.__file__)), "**", "*.md"), recursive=True))
    files += sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(spm.__file__)), "**", "LICENSE*"), recursive=True))
    lines, size = [], 0
    for f in files:
        try:
            for line in open(f, encoding="utf-8", errors="ignore"):
                line = line.rstrip("\n")
                if line.strip():
                    lines.append(line); size += len(line)
        except OSError:
            pass
        if size > 3_000_000:
            break
    lines += [t.format(S1="", S2="", S3="", N1="") for t in TEXTS] * 20
    print("sentencepiece corpus:", len(files), "files", len(lines), "lines", size, "chars")
    d = os.path.join(ROOT, "tok-sentencepiece"); os.makedirs(d, exist_ok=True)
    tmp = "/tmp/tokfix/spm"; os.makedirs(tmp, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=os.path.join(tmp, "tokenizer"), vocab_size=700, model_type="bpe",
        character_coverage=0.9995, byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=8, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(tmp, "tokenizer.model"))
    # LLaMA-2's tokenizer_config settings; AutoTokenizer converts the SentencePiece file as for a real LLaMA-2 folder.
    json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
               "add_bos_token": True, "add_eos_token": False}, open(os.path.join(tmp, "tokenizer_config.json"), "w"))
    hf = AutoTokenizer.from_pretrained(tmp)
    print("sentencepiece tokenizer class:", type(hf).__name__)
    hf.save_pretrained(d)
    import shutil
    if not os.path.exists(os.path.join(d, "tokenizer.model")):
        shutil.copy(os.path.join(tmp, "tokenizer.model"), d)
    if os.path.exists(os.path.join(d, "tokenizer.json")):
        tj = json.load(open(os.path.join(d, "tokenizer.json")))
        print("sp tokenizer.json:", tj["model"]["type"], json.dumps(tj.get("normalizer"))[:200],
              json.dumps(tj.get("pre_tokenizer"))[:200], json.dumps(tj.get("post_processor"))[:300])
    ref = references(d, {"S1": "<s>", "S2": "</s>", "S3": "<s>", "N1": "<unk>"}, pad_fallback="</s>")
    ref["sentencepiece_ids"] = [sp.encode(t) for t in ref["texts"]]  # no bos/eos: the model alone
    ref["sentencepiece_decode"] = [sp.decode(ids) for ids in ref["sentencepiece_ids"]]
    json.dump(ref, open(os.path.join(d, "reference_tokenizer.json"), "w", encoding="utf-8"), indent=1, ensure_ascii=False)
    print("files:", sorted(os.listdir(d)))


failed = []
for f in [llama3_style, qwen2_style, gpt2_prefix, sentencepiece_tiny]:
    try:
        f()
    except Exception:
        traceback.print_exc(); failed.append(f.__name__)
with tarfile.open(os.path.join(OUT, "tokfix.tar.gz"), "w:gz") as t:
    t.add(ROOT, arcname="fixtures")
print("failed:", failed)
print("shipped .model files:", [p for p in glob.glob("/opt/**/*.model", recursive=True) if os.path.getsize(p) < 5_000_000][:20])
