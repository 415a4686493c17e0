"""Random Jinja expressions (fixed seed) for a differential test of the .NET evaluator against Jinja2.

Each case is `{{ <expression> }}` over a few variables; make_chat_references.py renders them with Jinja2 and stores the
output or the error type. The generator keeps numbers small (the .NET evaluator's ints are 64-bit) and avoids
constructs whose output depends on object identity or memory addresses.
"""
import random

VARIABLES = {
    "x": 3, "y": -2, "f": 2.5, "s": "Hello World", "e": "", "l": [1, 2, 3], "ls": ["b", "a", "C"],
    "d": {"k": "v", "n": 2}, "m": [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "yo"}],
    "t": True, "n": None,
}

ATOMS = ["0", "1", "7", "-3", "12", "0.5", "2.0", "1e-05", "3.25", "0.1", "1e16", "''", "'a'", "'Hello World'", "' pad '",
         "'é😀'", "\"it's\"", "none", "true", "false", "[]", "[1, 2]", "['x', 'y']", "{'a': 1}", "(1, 'b')",
         "x", "y", "f", "s", "e", "l", "ls", "d", "m", "t", "n", "u", "m[0]", "m[-1].content", "d.k", "d['n']", "l[1:]",
         "x", "s", "l", "m", "f", "d"]

BINARY = ["+", "-", "*", "/", "//", "%", "~", "==", "!=", "<", "<=", ">", ">=", "in", "not in", "and", "or"]

FILTERS = ["length", "string", "upper", "lower", "trim", "tojson", "list", "first", "last", "reverse", "sort", "join(',')",
           "default('d')", "int", "float", "abs", "round", "title", "capitalize", "unique", "sum", "items", "count",
           "default('z', true)", "replace('l', 'L')", "map('string')", "select", "reject", "min", "max", "tojson(indent=1)",
           "selectattr('role', 'equalto', 'user')", "map(attribute='role')", "join", "wordcount", "center(9)", "indent(2)"]

TESTS = ["string", "number", "defined", "undefined", "none", "iterable", "mapping", "sequence", "odd", "even",
         "divisibleby 3", "integer", "float", "boolean", "true", "false", "equalto 3", "in [1, 2, 3]", "lower", "upper"]

METHODS = [".upper()", ".lower()", ".split()", ".strip()", ".startswith('H')", ".endswith('d')", ".title()",
           ".replace('o', '0')", ".split('o')", ".count('l')", ".find('W')", ".capitalize()", ".lstrip()", ".rstrip(' d')",
           ".items()", ".keys()", ".values()", ".get('k')", ".get('zz', 0)", ".index(2)"]


def expression(rng, depth):
    if depth <= 0:
        return rng.choice(ATOMS)
    kind = rng.random()
    if kind < 0.30:
        a, b = expression(rng, depth - 1), expression(rng, depth - 1)
        op = rng.choice(BINARY)
        if op in ("*",):  # keep repetitions small
            b = rng.choice(["2", "0", "-1", "3"])
        return f"({a} {op} {b})"
    if kind < 0.50:
        return f"({expression(rng, depth - 1)}) | {rng.choice(FILTERS)}"
    if kind < 0.62:
        neg = rng.choice(["", "not "])
        return f"({expression(rng, depth - 1)} is {neg}{rng.choice(TESTS)})"
    if kind < 0.72:
        return f"({expression(rng, depth - 1)}){rng.choice(METHODS)}"
    if kind < 0.80:
        return f"({expression(rng, depth - 1)} if {expression(rng, depth - 1)} else {expression(rng, depth - 1)})"
    if kind < 0.88:
        # Subscripts of variables only: Jinja folds subscripts of constants at compile time with different error rules.
        base = rng.choice(["l", "s", "m", "d", "ls", "e", "x", "n", "t", "u", "m[0]", "m[-1].content", "d.k"])
        if rng.random() < 0.4:
            base = f"({base}) | {rng.choice(FILTERS)}"
        return f"({base})[{rng.choice(['0', '-1', '1:', ':-1', '::-1', '::2', '5', chr(39) + 'k' + chr(39)])}]"
    if kind < 0.94:
        return f"[{expression(rng, depth - 1)}, {expression(rng, depth - 1)}]"
    return f"(not {expression(rng, depth - 1)})"


def fuzz_expressions(count=1500, seed=20240726):
    rng = random.Random(seed)
    return [expression(rng, rng.choice([1, 2, 2, 3])) for _ in range(count)]


TEXTS = ["", " ", "  ", "\n", " \n", "\n  ", "\t", "a", " b ", "\n\n", "c\n", "  d  \n  ", "\r\n", " \t\n \t"]


def _tag(rng, body, block=True):
    left = rng.choice(["", "", "-", "+"]) if block else rng.choice(["", "", "-"])
    right = rng.choice(["", "", "-", "+"]) if block else rng.choice(["", "", "-"])
    if not block and left == "-" and body.startswith("-"):
        body = " " + body
    return ("{%" if block else "{{") + left + " " + body + " " + right + ("%}" if block else "}}")


def _sequence(rng, depth):
    parts = []
    for _ in range(rng.randint(1, 5)):
        r = rng.random()
        if r < 0.35:
            parts.append(rng.choice(TEXTS))
        elif r < 0.5:
            parts.append(_tag(rng, rng.choice(["'v'", "i", "' w '", "1"]), block=False))
        elif r < 0.6:
            parts.append("{#" + rng.choice(["", "-"]) + " note " + rng.choice(["", "-"]) + "#}")
        elif r < 0.68:
            parts.append(_tag(rng, "set z = 2"))
        elif depth > 0 and r < 0.84:
            parts.append(_tag(rng, "if true") + _sequence(rng, depth - 1) + rng.choice(["", _tag(rng, "else") + "never"]) + _tag(rng, "endif"))
        elif depth > 0:
            parts.append(_tag(rng, "for i in [1, 2]") + _sequence(rng, depth - 1) + _tag(rng, "endfor"))
        else:
            parts.append(rng.choice(TEXTS))
        parts.append(rng.choice(TEXTS))
    return "".join(parts)


def whitespace_templates(count=500, seed=11):
    """Random templates mixing text, tags with -/+ whitespace control, comments and nested blocks."""
    rng = random.Random(seed)
    templates = []
    for _ in range(count):
        t = _sequence(rng, 2)
        if rng.random() < 0.2:
            t += (rng.choice(TEXTS) + rng.choice(["{% raw %}", "{%- raw -%}", "{% raw -%}", "{%+ raw %}"]) + rng.choice(TEXTS) + "{{ raw }}"
                  + rng.choice(TEXTS) + rng.choice(["{% endraw %}", "{%- endraw -%}", "{% endraw +%}", "{%+ endraw %}"]) + rng.choice(TEXTS))
        templates.append(t + rng.choice(["", "\n", " \n"]))
    return templates
