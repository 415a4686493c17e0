#!/usr/bin/env python3
"""Derive the embedded WordNet 3.0 data set of QuanTA.MLNet (python3 stdlib only).

Input : the Princeton WordNet 3.0 database files data.noun / data.verb / data.adj / data.adv
        (Debian: `apt-get install wordnet-base`, installed under /usr/share/wordnet).
Output: samples/Data/wordnet/ (all gzip-compressed, tab-separated, one header line, UTF-8, no quoting):

  synsets.tsv.gz            every synset (117,659 rows; all have a definition), columns
                            Id  Split  Pos  Lexname  Words  Definition  Examples
                              Id         = pos letter + 8-digit offset, e.g. n02084071 (unique)
                              Split      = train | validation | test (80/10/10, fixed seed)
                              Pos        = n | v | a | s | r (WordNet ss_type; s = adjective satellite)
                              Lexname    = lexicographer file name, e.g. noun.animal (45 possible values)
                              Words      = the synset's lemmas, spaces for underscores, joined with " | "
                              Definition = the gloss up to its first quoted example, trailing "; " removed
                              Examples   = the quoted usage examples (without quotes), joined with " | "
  lexname-{train,validation,test}.tsv.gz
                            the default classification sample: columns Text, Label
                              Text  = "<first lemma>: <definition>"   (e.g. "dog: a member of the genus Canis ...")
                              Label = lexicographer file name, restricted to DEFAULT_CLASSES (10 classes,
                                      balanced: 400 / 50 / 50 rows per class)
  definition-{train,validation,test}.tsv.gz
                            the default generation sample (definition modelling): columns Prompt, Target
                              Prompt = "<first lemma>:"                (e.g. "dog:")
                              Target = "<definition>"                  (the model text is Prompt + " " + Target)
                            restricted to one-word lemmas ([A-Za-z][A-Za-z'-]*) and definitions of 3..20 words;
                            4,000 / 200 / 200 rows.

Split rule: synsets are grouped by their task text "<first lemma>: <definition>" (a few synsets share it) and whole
groups are assigned to a split, so no Text / Prompt+Target occurs in two splits. The samples are drawn from the
corresponding split of synsets.tsv.gz, so the default test rows are never seen in training (and the tiny base model
is pre-trained on the train split only).

Usage: python3 tools/wordnet/derive.py [--wordnet /usr/share/wordnet] [--out samples/Data/wordnet]
The output is byte-for-byte reproducible (fixed seed, gzip mtime 0).
"""
import argparse
import gzip
import hashlib
import os
import random
import re
import sys
from collections import defaultdict

SEED = 20061201  # fixed: WordNet 3.0's release month
SPLIT_FRACTIONS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))

# lexnames(5WN), WordNet 3.0: file number -> lexicographer file name (the `lexnames` file is not in the package).
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition", "verb.consumption",
    "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]
assert len(LEXNAMES) == 45

# Default classification sample: 10 semantically distinct classes with >= 1,400 synsets each.
DEFAULT_CLASSES = [
    "noun.animal", "noun.artifact", "noun.body", "noun.food", "noun.location", "noun.person", "noun.plant",
    "noun.substance", "verb.communication", "verb.motion",
]
CLASS_ROWS_PER_SPLIT = {"train": 400, "validation": 50, "test": 50}
DEFINITION_ROWS_PER_SPLIT = {"train": 4000, "validation": 200, "test": 200}

FILES = (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r"))
ADJ_MARKER = re.compile(r"\((a|p|ip)\)$")  # syntactic markers on adjective lemmas, e.g. "galore(ip)"


def parse_data_file(path, pos_letter):
    """Yields one dict per synset line of a WordNet data.* file (see wndb(5WN))."""
    with open(path, encoding="ascii") as f:
        for line in f:
            if line.startswith("  "):  # licence header lines
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            offset, lex_filenum, ss_type = fields[0], int(fields[1]), fields[2]
            w_cnt = int(fields[3], 16)
            words = []
            for i in range(w_cnt):
                lemma = ADJ_MARKER.sub("", fields[4 + 2 * i]).replace("_", " ")
                words.append(lemma)
            definition, examples = split_gloss(gloss.strip())
            yield {
                "Id": pos_letter + offset,
                "Pos": ss_type,
                "Lexname": LEXNAMES[lex_filenum],
                "Words": words,
                "Definition": definition,
                "Examples": examples,
            }


def split_gloss(gloss):
    """'def; "ex 1"; "ex 2"' -> ('def', ['ex 1', 'ex 2'])."""
    quote = gloss.find('"')
    if quote < 0:
        return gloss.rstrip("; ").strip(), []
    definition = gloss[:quote].rstrip("; ").strip()
    examples = [e.strip() for e in re.findall(r'"([^"]*)"', gloss[quote:]) if e.strip()]
    return definition, examples


def clean(text):
    assert "\t" not in text and "\n" not in text, text
    return text


def write_tsv_gz(path, header, rows):
    data = "\t".join(header) + "\n" + "".join("\t".join(clean(c) for c in r) + "\n" for r in rows)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(data.encode("utf-8"))
    return len(rows)


def task_text(s):
    return f"{s['Words'][0]}: {s['Definition']}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wordnet", default="/usr/share/wordnet", help="folder with data.noun, data.verb, ...")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "samples", "Data", "wordnet"))
    args = ap.parse_args()

    synsets = []
    for name, letter in FILES:
        path = os.path.join(args.wordnet, "data." + name)
        if not os.path.exists(path):
            sys.exit(f"missing {path}: install Debian's wordnet-base or pass --wordnet <folder with data.{name}>")
        synsets.extend(s for s in parse_data_file(path, letter) if s["Definition"])
    synsets.sort(key=lambda s: s["Id"])

    # Split whole groups of identical task text so no text occurs in two splits.
    groups = defaultdict(list)
    for s in synsets:
        groups[task_text(s)].append(s)
    keys = sorted(groups)
    random.Random(SEED).shuffle(keys)
    bounds, acc = [], 0.0
    for split, frac in SPLIT_FRACTIONS:
        acc += frac
        bounds.append((split, round(acc * len(keys))))
    start = 0
    for split, end in bounds:
        for k in keys[start:end]:
            for s in groups[k]:
                s["Split"] = split
        start = end

    os.makedirs(args.out, exist_ok=True)
    header = ["Id", "Split", "Pos", "Lexname", "Words", "Definition", "Examples"]
    rows = [[s["Id"], s["Split"], s["Pos"], s["Lexname"], " | ".join(s["Words"]), s["Definition"],
             " | ".join(s["Examples"])] for s in synsets]
    n = write_tsv_gz(os.path.join(args.out, "synsets.tsv.gz"), header, rows)
    print(f"synsets.tsv.gz: {n} synsets, {len(keys)} distinct texts")

    rng = random.Random(SEED + 1)
    for split, _ in SPLIT_FRACTIONS:
        in_split = [s for s in synsets if s["Split"] == split]
        # (a) classification: balanced sample of the default classes
        rows = []
        for label in DEFAULT_CLASSES:
            pool = [s for s in in_split if s["Lexname"] == label]
            take = CLASS_ROWS_PER_SPLIT[split]
            if len(pool) < take:
                sys.exit(f"{label} has only {len(pool)} synsets in {split}, need {take}")
            rows.extend([task_text(s), label] for s in rng.sample(pool, take))
        rng.shuffle(rows)
        write_tsv_gz(os.path.join(args.out, f"lexname-{split}.tsv.gz"), ["Text", "Label"], rows)
        print(f"lexname-{split}.tsv.gz: {len(rows)} rows, {len(DEFAULT_CLASSES)} classes")

        # (b) definition modelling: one-word lemmas, short definitions
        pool = [s for s in in_split
                if re.fullmatch(r"[A-Za-z][A-Za-z'-]*", s["Words"][0]) and 3 <= len(s["Definition"].split()) <= 20]
        take = DEFINITION_ROWS_PER_SPLIT[split]
        rows = [[s["Words"][0] + ":", s["Definition"]] for s in rng.sample(pool, take)]
        write_tsv_gz(os.path.join(args.out, f"definition-{split}.tsv.gz"), ["Prompt", "Target"], rows)
        print(f"definition-{split}.tsv.gz: {len(rows)} rows (pool {len(pool)})")

    for name in sorted(os.listdir(args.out)):
        p = os.path.join(args.out, name)
        with open(p, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        print(f"  {name:32s} {os.path.getsize(p):>9,d} bytes  sha256 {digest}")


if __name__ == "__main__":
    main()
