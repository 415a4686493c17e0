#!/usr/bin/env python3
"""Reference renderings of chat templates for the .NET ChatTemplate tests (test/QuanTA.Core.Tests/Chat/).

Modes (run from the repository root):
  python3 tools/chat/make_chat_references.py [--out DIR]
      Renders every template x conversation x add_generation_prompt with Jinja2 exactly as Hugging Face transformers
      does (chat_template_utils._compile_jinja_template: ImmutableSandboxedEnvironment(trim_blocks=True,
      lstrip_blocks=True, extensions=[generation tag, loopcontrols]), transformers' tojson, raise_exception,
      strftime_now fixed to FIXED_NOW) and writes DIR/references.json (default DIR: test/fixtures/chat-templates).
      The file also holds "engine" cases: small templates exercising one Jinja construct each, rendered the same way.
      When `transformers` is importable (the GPU host), it also loads each chat tokenizer folder with AutoTokenizer
      and writes DIR/token-references.json: tokenizer.apply_chat_template(messages, tokenize=True,
      add_generation_prompt=...) ids per case (plus the tokenize=False text, which must equal references.json's).
      With $OUT set, the outputs are also copied to $OUT.
  python3 tools/chat/make_chat_references.py --make-folders
      (Re)creates the chat tokenizer fixture folders test/fixtures/chat-templates/tok-*-chat from the tok-* tokenizer
      fixtures by plain JSON editing (no transformers needed).
"""
import argparse, copy, datetime, json, os, shutil, sys, warnings

import jinja2
import jinja2.ext
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILTIN = os.path.join(ROOT, "src", "QuanTA.Core", "Chat", "Templates", "BuiltIn")
FIXTURES = os.path.join(ROOT, "test", "fixtures", "chat-templates")
FIXED_NOW = datetime.datetime(2024, 7, 26, 9, 5, 3)

sys.path.insert(0, os.path.dirname(__file__))
from chat_reference_cases import CONVERSATIONS, ENGINE_CASES  # noqa: E402
from chat_fuzz_cases import VARIABLES as FUZZ_VARIABLES, fuzz_expressions, whitespace_templates  # noqa: E402

# name -> (template file, bos_token, eos_token): the models' own special tokens.
TEMPLATES = {
    "llama2": (os.path.join(BUILTIN, "llama2.jinja"), "<s>", "</s>"),
    "mistral": (os.path.join(BUILTIN, "mistral.jinja"), "<s>", "</s>"),
    "llama3": (os.path.join(BUILTIN, "llama3.jinja"), "<|begin_of_text|>", "<|eot_id|>"),
    "qwen2": (os.path.join(BUILTIN, "qwen2.jinja"), None, "<|im_end|>"),
    "qwen2.5": (os.path.join(BUILTIN, "qwen2.5.jinja"), None, "<|im_end|>"),
    # test-only real-world templates (test/fixtures/chat-templates/extra/README.md)
    "llama3.3": (os.path.join(FIXTURES, "extra", "llama3.3.jinja"), "<|begin_of_text|>", "<|eot_id|>"),
    "qwen3": (os.path.join(FIXTURES, "extra", "qwen3.jinja"), None, "<|im_end|>"),
    "deepseek-r1": (os.path.join(FIXTURES, "extra", "deepseek-r1.jinja"), "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "gemma": (os.path.join(FIXTURES, "extra", "gemma.jinja"), "<bos>", "<eos>"),
    "phi3": (os.path.join(FIXTURES, "extra", "phi3.jinja"), "<s>", "<|endoftext|>"),
}

# chat tokenizer fixture folder -> (source tokenizer fixture, built-in template, where the template goes)
FOLDERS = {
    "tok-llama3-chat": ("tok-llama3-style", "llama3", "tokenizer_config"),
    "tok-qwen2-chat": ("tok-qwen2-style", "qwen2", "tokenizer_config"),
    "tok-llama2-chat": ("tok-sentencepiece", "llama2", "jinja_file"),
    "tok-mistral-chat": ("tok-sentencepiece", "mistral", "tokenizer_config"),
}


class GenerationTag(Extension):
    """transformers' {% generation %}...{% endgeneration %} tag, rendering its body unchanged (tracking not needed here)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_environment():
    """The environment of transformers' _compile_jinja_template, with strftime_now fixed to FIXED_NOW."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return FIXED_NOW.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def read_template(path):
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def render_chat(env, text, messages, add_generation_prompt, bos, eos):
    """As transformers' render_jinja_template: messages, tools=None, documents=None, add_generation_prompt, special tokens."""
    kwargs = {}
    if bos is not None:
        kwargs["bos_token"] = bos
    if eos is not None:
        kwargs["eos_token"] = eos
    return env.from_string(text).render(messages=messages, tools=None, documents=None,
                                        add_generation_prompt=add_generation_prompt, **kwargs)


def outcome(fn):
    try:
        return {"expected": fn()}
    except jinja2.exceptions.TemplateError as e:
        return {"error_type": type(e).__name__, "error": str(e)}
    except Exception as e:  # TypeError, ValueError, ... raised inside the template
        return {"error_type": type(e).__name__, "error": str(e)}


def make_references():
    env = make_environment()
    templates, cases = {}, []
    for name, (path, bos, eos) in TEMPLATES.items():
        text = read_template(path)
        templates[name] = {"file": os.path.relpath(path, ROOT).replace(os.sep, "/"), "bos_token": bos, "eos_token": eos}
        for conv_name, messages in CONVERSATIONS:
            for agp in (False, True):
                case = {"template": name, "conversation": conv_name, "messages": messages, "add_generation_prompt": agp}
                case.update(outcome(lambda: render_chat(env, text, copy.deepcopy(messages), agp, bos, eos)))
                cases.append(case)
    engine = []
    for case in ENGINE_CASES:
        text = case["template"]
        if text.startswith("@"):  # one of TEMPLATES, by name
            text = read_template(TEMPLATES[text[1:]][0])
        out = {"name": case["name"], "template": text, "variables": case.get("variables", {})}
        # A fresh copy per render: a template can mutate its inputs (e.g. `list | indent` extends the list in place).
        out.update(outcome(lambda: env.from_string(text).render(**copy.deepcopy(out["variables"]))))
        engine.append(out)
    fuzz = []
    warnings.simplefilter("ignore", SyntaxWarning)  # Python's compiler notes about e.g. `1[0]` in generated code
    for expr in fuzz_expressions():
        out = {"expression": expr}
        result = outcome(lambda: env.from_string("{{ " + expr + " }}").render(**copy.deepcopy(FUZZ_VARIABLES)))
        out.update({"expected": result["expected"]} if "expected" in result else {"error_type": result["error_type"]})
        fuzz.append(out)
    whitespace = [{"template": t, **outcome(lambda: env.from_string(t).render())} for t in whitespace_templates()]
    return {
        "generator": "tools/chat/make_chat_references.py",
        "jinja2_version": jinja2.__version__,
        "strftime_now": FIXED_NOW.isoformat(),
        "templates": templates,
        "cases": cases,
        "engine_cases": engine,
        "fuzz_variables": FUZZ_VARIABLES,
        "fuzz_cases": fuzz,
        "whitespace_cases": whitespace,
    }


def make_token_references(references):
    import transformers
    from transformers import AutoTokenizer

    by_key = {(c["template"], c["conversation"], c["add_generation_prompt"]): c for c in references["cases"]}
    cases = []
    for folder, (_, template, _) in FOLDERS.items():
        tok = AutoTokenizer.from_pretrained(os.path.join(FIXTURES, folder))
        for conv_name, messages in CONVERSATIONS:
            for agp in (False, True):
                if "expected" not in by_key[(template, conv_name, agp)]:
                    continue  # the template refuses this conversation
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp)
                out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=agp)
                if hasattr(out, "keys") and "input_ids" in out.keys():
                    out = out["input_ids"]
                if hasattr(out, "tolist"):
                    out = out.tolist()
                while isinstance(out, list) and len(out) == 1 and isinstance(out[0], list):
                    out = out[0]
                cases.append({"folder": folder, "template": template, "conversation": conv_name, "messages": messages,
                              "add_generation_prompt": agp, "text": text, "ids": [int(i) for i in out]})
    return {
        "generator": "tools/chat/make_chat_references.py",
        "transformers_version": transformers.__version__,
        "cases": cases,
    }


def write_json(obj, directory, name):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", path)
    if os.environ.get("OUT") and os.path.abspath(os.environ["OUT"]) != os.path.abspath(directory):
        os.makedirs(os.environ["OUT"], exist_ok=True)
        shutil.copy(path, os.path.join(os.environ["OUT"], name))


def make_folders():
    """Chat tokenizer folders: a tok-* fixture's tokenizer files + the chat tokens it lacks + a chat template."""
    for folder, (source, template, where) in FOLDERS.items():
        src, dst = os.path.join(ROOT, "test", "fixtures", source), os.path.join(FIXTURES, folder)
        if os.path.isdir(dst):
            shutil.rmtree(dst)
        os.makedirs(dst)
        for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"):
            if os.path.exists(os.path.join(src, f)):
                shutil.copy(os.path.join(src, f), os.path.join(dst, f))
        with open(os.path.join(dst, "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        with open(os.path.join(dst, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        if template == "llama3":  # LLaMA-3's header tokens, as added special tokens with new ids
            next_id = max([t["id"] for t in tok["added_tokens"]] + list(tok["model"]["vocab"].values())) + 1
            for content in ("<|start_header_id|>", "<|end_header_id|>"):
                if not any(t["content"] == content for t in tok["added_tokens"]):
                    tok["added_tokens"].append({"id": next_id, "content": content, "single_word": False, "lstrip": False,
                                                "rstrip": False, "normalized": False, "special": True})
                    next_id += 1
            config["added_tokens_decoder"] = {
                str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
                for t in tok["added_tokens"]}
        text = read_template(TEMPLATES[template][0])
        if where == "jinja_file":
            with open(os.path.join(dst, "chat_template.jinja"), "w", encoding="utf-8", newline="") as f:
                f.write(text)
        else:
            config["chat_template"] = text
        with open(os.path.join(dst, "tokenizer.json"), "w", encoding="utf-8", newline="\n") as f:
            json.dump(tok, f, ensure_ascii=False, indent=2)
        with open(os.path.join(dst, "tokenizer_config.json"), "w", encoding="utf-8", newline="\n") as f:
            json.dump(config, f, ensure_ascii=False, indent=2)
        print("made", os.path.relpath(dst, ROOT), f"({template} template in {where})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-folders", action="store_true", help="create the tok-*-chat fixture folders and exit")
    ap.add_argument("--out", default=FIXTURES, help="where references.json / token-references.json go")
    args = ap.parse_args()
    if args.make_folders:
        make_folders()
        return
    references = make_references()
    write_json(references, args.out, "references.json")
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("transformers is not importable here: token-references.json not written (run this on the GPU host)")
        return
    tokens = make_token_references(references)
    mismatched = [c for c in tokens["cases"]
                  if c["text"] != next(r["expected"] for r in references["cases"]
                                       if (r["template"], r["conversation"], r["add_generation_prompt"]) ==
                                       (c["template"], c["conversation"], c["add_generation_prompt"]))]
    for c in mismatched:
        print("WARNING: apply_chat_template text differs from the Jinja2 rendering:", c["folder"], c["conversation"], c["add_generation_prompt"])
    write_json(tokens, args.out, "token-references.json")


if __name__ == "__main__":
    main()
