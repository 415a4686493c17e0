#!/usr/bin/env python3
"""Train a GPT-2 style byte-level BPE tokenizer on the WordNet train split (python3 stdlib only).

Writes, in Hugging Face layout (the same files and formats as test/fixtures/llama-tiny):
  vocab.json             token -> id (compact JSON); ids 0,1 = <|endoftext|>, <|pad|>; 2..257 = the 256 byte symbols
                         (GPT-2 bytes_to_unicode alphabet, sorted by code point); then one token per merge, in order
  merges.txt             "#version: 0.2" + one "a b" line per merge, in merge (= rank) order
  tokenizer.json         BPE model with the same vocab/merges, ByteLevel pre-tokenizer (add_prefix_space false,
                         GPT-2 regex) and decoder, both special tokens as added tokens
  tokenizer_config.json  bos = eos = <|endoftext|>, pad = <|pad|>

Training text (train split of samples/Data/wordnet/synsets.tsv.gz only, so validation/test stay unseen):
every definition, every usage example and every lemma (as " lemma").
Pre-tokenization is GPT-2's regex  's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
(written with ASCII classes here: WordNet 3.0 is pure ASCII, which is asserted). The trainer is the classic one
(Sennrich et al. 2016; as in HF tokenizers' BpeTrainer): repeatedly merge the most frequent adjacent pair inside
words, ties broken by the smaller pair; min frequency 2.

Usage: python3 tools/wordnet/train_bpe.py [--data samples/Data/wordnet] [--out DIR] [--vocab-size 4096]
Deterministic: same input -> same files.
"""
import argparse
import gzip
import heapq
import json
import os
import re
from collections import Counter, defaultdict

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]
GPT2_PATTERN_ASCII = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_ENCODER = bytes_to_unicode()


def read_training_lines(data_dir):
    path = os.path.join(data_dir, "synsets.tsv.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        col = {name: i for i, name in enumerate(header)}
        for line in f:
            r = line.rstrip("\n").split("\t")
            if r[col["Split"]] != "train":
                continue
            yield r[col["Definition"]]
            for e in filter(None, r[col["Examples"]].split(" | ")):
                yield e
            for w in r[col["Words"]].split(" | "):
                yield " " + w


def count_words(lines):
    counts = Counter()
    for line in lines:
        assert line.isascii(), line
        for piece in GPT2_PATTERN_ASCII.findall(line):
            counts["".join(BYTE_ENCODER[b] for b in piece.encode("utf-8"))] += 1
    return counts


def train(word_counts, vocab_size, min_frequency=2):
    alphabet = sorted(BYTE_ENCODER.values())
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + alphabet)}
    words = [list(w) for w in word_counts]
    freqs = [word_counts[w] for w in word_counts]

    pair_counts = defaultdict(int)
    where = defaultdict(set)  # pair -> indices of words containing it
    for i, (syms, fr) in enumerate(zip(words, freqs)):
        for a, b in zip(syms, syms[1:]):
            pair_counts[(a, b)] += fr
            where[(a, b)].add(i)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges = []
    while len(vocab) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg:  # stale entry
            continue
        if -neg < min_frequency:
            break
        a, b = pair
        new = a + b
        merges.append(pair)
        vocab[new] = len(vocab)
        touched = set()
        for i in list(where[pair]):
            syms, fr = words[i], freqs[i]
            for p in zip(syms, syms[1:]):
                pair_counts[p] -= fr
                touched.add(p)
            out, j = [], 0
            while j < len(syms):
                if j + 1 < len(syms) and syms[j] == a and syms[j + 1] == b:
                    out.append(new)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            words[i] = out
            for p in zip(out, out[1:]):
                pair_counts[p] += fr
                where[p].add(i)
                touched.add(p)
        del pair_counts[pair]
        del where[pair]
        for p in touched:
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            elif p in pair_counts:
                del pair_counts[p]
    return vocab, merges


def tokenizer_json(vocab, merges):
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
             "special": True} for i, t in enumerate(SPECIAL_TOKENS)],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {},
        },
        "decoder": dict(byte_level, add_prefix_space=True),
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab, "merges": [[a, b] for a, b in merges],
        },
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "samples", "Data", "wordnet"))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "samples", "Models", "wordnet-llama-tiny"))
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--model-max-length", type=int, default=128)
    args = ap.parse_args()

    counts = count_words(read_training_lines(args.data))
    print(f"{sum(counts.values()):,} pre-tokens, {len(counts):,} distinct")
    vocab, merges = train(counts, args.vocab_size)
    print(f"vocab {len(vocab)} = {len(SPECIAL_TOKENS)} special + 256 bytes + {len(merges)} merges")

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(args.out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(vocab, merges), f, ensure_ascii=False, indent=2)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"backend": "tokenizers", "bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[0],
                   "model_max_length": args.model_max_length, "pad_token": SPECIAL_TOKENS[1],
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)

    # Stats: tokens per pre-token on the training text (encode = apply merges in rank order).
    ranks = {m: i for i, m in enumerate(merges)}
    total_tokens = 0
    for w, c in counts.items():
        total_tokens += len(bpe(w, ranks)) * c
    print(f"training text: {sum(counts.values()):,} pre-tokens -> {total_tokens:,} tokens "
          f"({total_tokens / sum(counts.values()):.3f} tokens per pre-token)")


def bpe(word, ranks):
    syms = list(word)
    while len(syms) > 1:
        best = min(((ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(syms, syms[1:]))))
        if best[0] == 1 << 30:
            break
        i = best[1]
        syms[i:i + 2] = [syms[i] + syms[i + 1]]
    return syms


if __name__ == "__main__":
    main()
