"""Conversations and evaluator cases rendered by make_chat_references.py (kept apart so the script stays readable)."""


def m(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    ("single-turn", [m("user", "What is the capital of France?")]),
    ("system-prompt", [m("system", "You are a concise assistant."), m("user", "Name a primary color."), m("assistant", "Red.")]),
    ("multi-turn", [
        m("user", "Hi there!"),
        m("assistant", "Hello! How can I help?"),
        m("user", "Tell me a joke."),
        m("assistant", "Why did the chicken cross the road? To get to the other side."),
        m("user", "Another one, please."),
        m("assistant", "I would tell you a UDP joke, but you might not get it."),
    ]),
    ("system-multi-turn", [
        m("system", "Answer in French."),
        m("user", "Good morning"),
        m("assistant", "Bonjour"),
        m("user", "Thank you"),
        m("assistant", "Merci"),
    ]),
    ("unicode-newlines", [
        m("user", "  Translate: naïve café — 日本語 😀👍🏽\nSecond line\n\n  indented\t tab  "),
        m("assistant", "\nRésumé: ✓ done 🎉\r\nline two\n  "),
    ]),
    ("empty-system", [m("system", ""), m("user", "Hello"), m("assistant", "Hi!")]),
    ("trailing-user", [m("user", "First question?"), m("assistant", "First answer."), m("user", "Follow-up?")]),
    ("non-alternating", [m("user", "One"), m("user", "Two"), m("assistant", "Three")]),
    ("reasoning", [
        m("user", "2 + 2?"),
        m("assistant", "<think>\nAdd them.\n</think>\n\n4"),
        m("user", "And 3 + 3?"),
        m("assistant", "<think>\nAgain.\n</think>\n6"),
    ]),
]

MESSAGES = [m("system", "sys"), m("user", "u1"), m("assistant", "a1"), m("user", "u2")]

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
                                                        "days": {"type": "integer"}}, "required": ["city"]},
    },
}]

TOOL_MESSAGES = [
    m("system", "You can call tools."),
    m("user", "Weather in Paris?"),
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
    m("tool", '{"temp": 21.5, "sky": "clear"}'),
    m("assistant", "It is 21.5 °C and clear."),
]

ENGINE_CASES = [
    # ---- loops ----
    {"name": "loop-variables", "template": "{% for x in items %}{{ loop.index0 }}/{{ loop.index }}/{{ loop.revindex }}/{{ loop.revindex0 }}/"
                                           "{{ loop.first }}/{{ loop.last }}/{{ loop.length }}:{{ x }} {% endfor %}",
     "variables": {"items": ["a", "b", "c"]}},
    {"name": "loop-else", "template": "{% for x in items %}{{ x }}{% else %}empty{% endfor %}|{% for x in [1] %}{{ x }}{% else %}no{% endfor %}",
     "variables": {"items": []}},
    {"name": "loop-filter", "template": "{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m.content }}{{ '.' if loop.last }}{% endfor %}",
     "variables": {"messages": MESSAGES}},
    {"name": "loop-unpack", "template": "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for a, (b, c) in [(1, (2, 3))] %}{{ a }}{{ b }}{{ c }}{% endfor %}",
     "variables": {"d": {"x": 1, "y": [1, 2]}}},
    {"name": "loop-break-continue", "template": "{% for i in range(10) %}{% if i % 2 %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% endfor %}"},
    {"name": "loop-nested", "template": "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ a }}{{ b }} {% endfor %}{{ loop.index }}|{% endfor %}"},
    {"name": "loop-prev-next-cycle", "template": "{% for x in [1, 2, 3] %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }} {{ loop.cycle('odd', 'even') }};{% endfor %}"},
    {"name": "loop-changed-and-attr-filter", "template": "{% for m in messages %}{% if loop.changed(m.role) %}[{{ m | attr('role') }}]{% endif %}{{ m.content }}{% endfor %}|{{ {'a': 1} | attr('a') }}",
     "variables": {"messages": [m("user", "a"), m("user", "b"), m("assistant", "c"), m("user", "d")]}},
    {"name": "loop-over-dict-and-string", "template": "{% for k in {'b': 1, 'a': 2} %}{{ k }}{% endfor %}|{% for c in 'h😀!' %}[{{ c }}]{% endfor %}"},
    # ---- scoping ----
    {"name": "scope-loop-set", "template": "{% set x = 'outer' %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }} {% endfor %}{{ x }}"},
    {"name": "scope-if-set", "template": "{% if true %}{% set y = 5 %}{% endif %}{{ y }}{% for i in [1] %}{% if true %}{% set z = 1 %}{% endif %}{{ z }}{% endfor %}[{{ z }}]"},
    {"name": "namespace", "template": "{% set ns = namespace(found=false, n=0, items=[]) %}{% for m in messages %}{% if m.role == 'system' %}"
                                      "{% set ns.found = true %}{% endif %}{% set ns.n = ns.n + 1 %}{% set ns.items = ns.items + [m.role] %}{% endfor %}"
                                      "{{ ns.found }} {{ ns.n }} {{ ns.items }}",
     "variables": {"messages": MESSAGES}},
    {"name": "set-forms", "template": "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = 3, 4 %}{{ t }}{% set blk %}Hi {{ a }}!{% endset %}[{{ blk }}]"
                                      "{% set up | upper %}shout {{ b }}{% endset %}{{ up }}"},
    {"name": "set-messages-slice", "template": "{% set messages = messages[1:] %}{{ messages | length }}{{ messages[0].content }}",
     "variables": {"messages": MESSAGES}},
    {"name": "macro", "template": "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} {{ greet('Al', punct='?') }} "
                                  "{{ greet() }}|{% macro twice(x) %}{{ x }}{{ x }}{% endmacro %}{{ twice(greet('C')) | upper }}"},
    {"name": "with-and-filter-block", "template": "{% with a = 1, b = 'x' %}{{ a }}{{ b }}{% endwith %}[{{ a }}]{% filter upper %}up {{ 'me' }}{% endfilter %}"},
    # ---- literals and operators ----
    {"name": "string-literals", "template": "{{ 'a\\tb\\\\n\\x41\\u00e9\\U0001F600\\101' }}|{{ \"it's\" }}|{{ 'adjacent' \" strings\" }}|{{ 'q\\'s' }}"},
    {"name": "repr-of-containers", "template": "{{ [1, 2.5, 'x', none, true, {'a': (1,)}, (1, 2), []] }}|{{ {'k': \"it's\", 'n': \"a\\nb\"} }}|{{ ('solo',) }}"},
    {"name": "arithmetic", "template": "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7.5 % 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7 / 2 }} {{ 6 / 3 }} "
                                       "{{ 1 + 2 * 3 - 4 }} {{ -3 + +2 }} {{ true + 1 }} {{ 'x' * 3 }} {{ [1] + [2] }} {{ [0] * 2 }} {{ 1_000 + 0x10 + 0o10 + 0b11 }}"},
    {"name": "floats", "template": "{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e15 }} {{ 1.5e-5 }} {{ 0.0001 }} {{ 3.0 }} {{ 2.5e100 }} {{ 1 / 3 }} {{ -0.0 }} {{ 123456789.123 }} {{ 1.5 }} {{ f }}",
     "variables": {"f": 2.0}},
    {"name": "concat", "template": "{{ 'ab' ~ 1 ~ none ~ true ~ [1] ~ missing ~ 2.50 }}"},
    {"name": "comparisons", "template": "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' in 'cat' }} {{ 3 not in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 1 == 1.0 }} "
                                        "{{ 'b' > 'a' }} {{ [1, 2] < [1, 3] }} {{ none == none }} {{ 1 != '1' }} {{ (1, 2) == [1, 2] }} {{ missing == missing }}"},
    {"name": "logic", "template": "{{ none or 'd' }} {{ 0 and 1 }} {{ 'a' and 'b' }} {{ not '' }} {{ not [] }} {{ [] or {} or 'z' }} {{ not missing }} {{ (1 if false) is defined }}"},
    {"name": "inline-if", "template": "{{ 'y' if x else 'n' }}{{ 'only' if false }}|{{ 'a' if 0 else 'b' if 1 else 'c' }}", "variables": {"x": [0]}},
    # ---- tests ----
    {"name": "tests", "template": "{{ x is defined }} {{ missing is undefined }} {{ none is none }} {{ 's' is string }} {{ d is mapping }} {{ d is iterable }} "
                                  "{{ 's' is iterable }} {{ 3 is iterable }} {{ l is sequence }} {{ 's' is sequence }} {{ 3 is number }} {{ true is number }} "
                                  "{{ 3 is integer }} {{ true is integer }} {{ 3.0 is float }} {{ true is true }} {{ 1 is true }} {{ false is false }} "
                                  "{{ false is boolean }} {{ 4 is divisibleby 2 }} {{ 3 is odd }} {{ 3 is even }} {{ 'a' is equalto 'a' }} {{ x is not none }} "
                                  "{{ 2 is gt 1 }} {{ 2 is lt(1) }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 1 is in [1, 2] }} {{ x is sameas x }} "
                                  "{{ missing is iterable }} {{ missing is sequence }} {{ none is mapping }} {{ range is callable }}",
     "variables": {"x": 1, "d": {"a": 1}, "l": [1]}},
    # ---- filters ----
    {"name": "filters-strings", "template": "[{{ '  pad  '|trim }}][{{ 'xxhixx'|trim('x') }}][{{ 'MiXed'|upper }}{{ 'MiXed'|lower }}][{{ 'hello WORLD'|capitalize }}]"
                                            "[{{ \"they're bill's-friend (ok)\"|title }}][{{ 'a-b'|replace('-', '+') }}][{{ 'aaa'|replace('a', 'b', 2) }}]"
                                            "[{{ 3|string }}{{ none|string }}][{{ 'x'|safe }}][{{ '<a href=\"x\">&\\'</a>'|e }}][{{ 'one two  three'|wordcount }}]"
                                            "[{{ 'ab'|center(6) }}][{{ 'abc'|center(6) }}][{{ 'x'|center(4) }}][{{ '%s-%d'|format('a', 3) }}][{{ '%05.2f|%-4s|%3d'|format(3.14159, 'ab', 7) }}]"},
    {"name": "filters-length-default", "template": "{{ 'héllo😀'|length }} {{ [1, 2]|count }} {{ {'a': 1}|length }} {{ missing|length }} {{ missing|default('z') }} "
                                                   "{{ none|default('z') }} {{ ''|default('z', true) }} {{ 0|d('zero', boolean=true) }} {{ x|default('unused') }}",
     "variables": {"x": "set"}},
    {"name": "filters-numbers", "template": "{{ '42'|int }} {{ ' 4.7 '|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ -3.9|int }} {{ '0x1A'|int(0, 16) }} {{ true|int }} "
                                            "{{ '2.5'|float }} {{ 'no'|float }} {{ 3|float }} {{ -4|abs }} {{ -2.5|abs }} {{ 2.567|round(2) }} {{ 2.5|round }} "
                                            "{{ 3.2|round(0, 'ceil') }} {{ 3.7|round(method='floor') }} {{ [1, 2.5, 3]|sum }} {{ [{'v': 2}, {'v': 3}]|sum(attribute='v') }}"},
    {"name": "filters-sequences", "template": "{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }} {{ [3, 1, 2]|sort(reverse=true) }} "
                                              "{{ [1, 2, 3]|reverse|list }} {{ 'abc'|reverse }} {{ [1, 2, 1, 'A', 'a']|unique|list }} {{ [4, 2, 8]|min }} {{ [4, 2, 8]|max }} "
                                              "{{ ['b', 'A']|max }} {{ [1, 2]|first }} {{ [1, 2]|last }} {{ 'xyz'|first }} {{ []|first is defined }} {{ 'ab'|list }} "
                                              "{{ {'a': 1}|list }} {{ [1, 2, 3]|join('-') }} {{ ['a', 1, none]|join }} {{ {'b': 2, 'a': 1}|dictsort }} "
                                              "{{ {'b': 2, 'a': 1}|items|list }} {{ missing|list }} {{ missing|join(',') }}"},
    {"name": "filters-select-map", "template": "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(', ') }}|"
                                               "{{ messages|rejectattr('role', 'equalto', 'user')|map(attribute='role')|list }}|"
                                               "{{ [1, 0, 2, none]|select|list }}|{{ [1, 2, 3, 4]|select('odd')|list }}|{{ [1, 2, 3, 4]|reject('gt', 2)|list }}|"
                                               "{{ ['a ', ' b']|map('trim')|list }}|{{ ['x', 'y']|map('upper')|join }}|{{ [{'a': {'b': 1}}]|map(attribute='a.b')|list }}|"
                                               "{{ [{'a': 1}, {}]|map(attribute='a', default='d')|list }}|{{ [{'x': 1}, {'x': 0}]|selectattr('x')|list }}|"
                                               "{{ ['code_interpreter', 'brave_search']|reject('equalto', 'code_interpreter')|join(', ') }}",
     "variables": {"messages": MESSAGES}},
    {"name": "filters-indent", "template": "[{{ 'a\\nb\\n\\nc'|indent }}][{{ 'a\\nb'|indent(2, true) }}][{{ 'a\\n\\nb'|indent('> ', blank=true) }}]"},
    {"name": "tojson", "template": "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ d|tojson(sort_keys=true) }}|{{ 'é\"\\n\\u2028\\x7f'|tojson }}|{{ 'é😀'|tojson(ensure_ascii=true) }}|"
                                   "{{ []|tojson(indent=2) }}|{{ {'e': {}, 'l': []}|tojson(indent=4) }}|{{ d|tojson(separators=(',', ':')) }}|{{ [1.0, 1e20, -0.5]|tojson }}|"
                                   "{{ {1: 'int key', none: 'n', true: 't'}|tojson }}|{{ (1, 'tuple')|tojson }}|{{ d|tojson(indent='\\t') }}",
     "variables": {"d": {"b": 1, "a": [1, 2.5, None, True, "x"], "c": {"nested": "é"}}}},
    # ---- methods ----
    {"name": "string-methods", "template": "[{{ '  x  '.strip() }}][{{ '  x  '.lstrip() }}][{{ '  x  '.rstrip() }}][{{ 'xxaxx'.strip('x') }}][{{ 'a b  c'.split() }}]"
                                           "[{{ 'a,b,,c'.split(',') }}][{{ 'a,b,c'.split(',', 1) }}][{{ 'a,b,c'.rsplit(',', 1) }}][{{ ' a b '.split(none, 1) }}]"
                                           "[{{ 'hello'.startswith('he') }}{{ 'hello'.startswith(('x', 'h')) }}{{ 'hello'.endswith('lo') }}{{ 'hello'.startswith('l', 2) }}]"
                                           "[{{ 'MiX'.upper() }}{{ 'MiX'.lower() }}][{{ \"they're here\".title() }}][{{ 'hELLO'.capitalize() }}]"
                                           "[{{ 'aaa'.replace('a', 'b', 1) }}][{{ 'hello'.find('l') }}{{ 'hello'.rfind('l') }}{{ 'hello'.find('z') }}{{ 'hello'.count('l') }}]"
                                           "[{{ '-'.join(['a', 'b']) }}][{{ 'a\\nb\\r\\nc'.splitlines() }}][{{ '{} and {name}'.format(1, name='x') }}][{{ '7'.zfill(3) }}]"
                                           "[{{ 'a</think>b'.split('</think>')[-1] }}][{{ 'abc'.removeprefix('a') }}][{{ '12'.isdigit() }}{{ ' '.isspace() }}]"},
    {"name": "dict-and-list-methods", "template": "{{ d.items()|list }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.get('a') }} {{ d.get('zz', 'def') }} {{ d.get('zz') }} "
                                                  "{{ d['items'] }} {{ [1, 2, 2].count(2) }} {{ [5, 6].index(6) }} {{ d.a }}",
     "variables": {"d": {"a": 1, "items": "key named items"}}},
    {"name": "subscripts", "template": "{{ 'hello'[1:4] }} {{ 'hello'[::-1] }} {{ 'hello'[-2:] }} {{ l[1:] }} {{ l[-2:] }} {{ l[::2] }} {{ l[:-1] }} {{ l[10:] }} "
                                       "{{ 'h😀llo'[1] }} {{ 'h😀llo'[2:] }} {{ l[-1] }} {{ l.0 }} {{ l[5] is defined }} {{ messages[-1]['content'] }} {{ (messages|last).role }} "
                                       "{{ messages[0].content }} {{ l['x'] is defined }} {{ none['x'] is defined }}",
     "variables": {"l": [1, 2, 3, 4], "messages": MESSAGES}},
    {"name": "undefined", "template": "[{{ missing }}][{{ missing is defined }}][{{ d.nothere }}][{{ missing|trim }}][{% for x in missing %}no{% endfor %}]"
                                      "[{{ d.nothere is defined }}][{{ 'x' in missing }}][{{ missing ~ 'y' }}][{{ missing|upper }}][{{ missing|string }}]",
     "variables": {"d": {}}},
    # ---- whitespace control ----
    {"name": "whitespace-trim-lstrip", "template": "<ul>\n  {% for x in items %}\n    <li>{{ x }}</li>\n  {% endfor %}\n</ul>\n  {# comment #}\ntail  {% if true %}  x  {% endif %}  \n",
     "variables": {"items": [1, 2]}},
    {"name": "whitespace-dash", "template": "a  \n  {%- if true -%}  \n  b  \n  {%- endif %}  c {{- ' d ' -}}  e\n{#- c -#}\n  f\n{{ 'g' }}\n"},
    {"name": "whitespace-plus-and-raw", "template": "  {%+ if true %}x{% endif +%}\ny\n{% raw %}{{ not evaluated }} {% if %}{% endraw %}\n  {%- raw %} r {% endraw -%}  \nz"},
    {"name": "whitespace-crlf", "template": "line1\r\n{% if true %}\r\n  in\r\n{% endif %}\r\nend\r\n"},
    {"name": "trailing-newline-dropped", "template": "text\n"},
    {"name": "generation-tag", "template": "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}!{% endgeneration %}{% else %}{{ m.content }}{% endif %};{% endfor %}",
     "variables": {"messages": MESSAGES + [m("assistant", "a2")]}},
    # ---- globals ----
    {"name": "strftime-now", "template": "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M:%S %A %a %B %j %I%p %y %w %%') }}|{{ strftime_now('%-d %-m') }}"},
    {"name": "range-dict-namespace", "template": "{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(3, 0, -1)|list }} {{ dict(a=1, b='x') }} {{ namespace(a=1).a }}"},
    # ---- real templates with tools (the conversation fixtures have none) ----
    {"name": "qwen2.5-tools", "template": "@qwen2.5", "variables": {"messages": TOOL_MESSAGES, "tools": TOOLS, "add_generation_prompt": True}},
    {"name": "llama3.3-tools", "template": "@llama3.3", "variables": {"messages": TOOL_MESSAGES, "tools": TOOLS, "bos_token": "<|begin_of_text|>",
                                                                       "add_generation_prompt": False}},
    {"name": "qwen3-tools-and-reasoning", "template": "@qwen3", "variables": {
        "messages": TOOL_MESSAGES + [m("user", "And Rome?"), {"role": "assistant", "content": "Sunny too.", "reasoning_content": "\nLook it up.\n"}],
        "tools": TOOLS, "add_generation_prompt": True, "enable_thinking": False}},
    {"name": "deepseek-r1-tools", "template": "@deepseek-r1", "variables": {
        "messages": [m("system", "S"), m("user", "Q"),
                     {"role": "assistant", "content": None, "tool_calls": [
                         {"type": "function", "function": {"name": "f", "arguments": "{}"}},
                         {"type": "function", "function": {"name": "g", "arguments": "{\"a\": 1}"}}]},
                     m("tool", "r1"), m("tool", "r2"), m("assistant", "<think>x</think>done")],
        "bos_token": "<｜begin▁of▁sentence｜>", "add_generation_prompt": True}},
    {"name": "llama3.3-builtin-tools", "template": "@llama3.3", "variables": {
        "messages": [m("user", "Search the weather"),
                     {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "brave_search", "arguments": {"query": "weather"}}}]},
                     m("ipython", "sunny")],
        "builtin_tools": ["brave_search", "code_interpreter"], "tools_in_user_message": False, "date_string": "01 Jan 2025",
        "bos_token": "<|begin_of_text|>", "add_generation_prompt": True}},
    # ---- errors ----
    {"name": "error-raise-exception", "template": "{% if messages|length > 1 %}{{ raise_exception('Too many messages: ' ~ messages|length) }}{% endif %}ok",
     "variables": {"messages": MESSAGES}},
    {"name": "error-undefined-attribute", "template": "{{ missing.attr }}"},
    {"name": "error-attribute-of-missing-member", "template": "{{ d.a.b }}", "variables": {"d": {}}},
    {"name": "error-type", "template": "{{ 1 + 'a' }}"},
    {"name": "error-sandbox-mutation", "template": "{{ l.append(3) }}", "variables": {"l": [1]}},
    {"name": "error-unknown-filter", "template": "{{ x | nosuchfilter }}"},
    {"name": "error-syntax", "template": "{% for x in %}{% endfor %}"},
    {"name": "error-unclosed-block", "template": "{% if true %}never closed"},
    {"name": "error-unknown-tag", "template": "{% for x in y %}{% endif %}{% endfor %}"},
    {"name": "error-namespace-assign", "template": "{% set d = {} %}{% set d.x = 1 %}"},
]
