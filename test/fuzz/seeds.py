#!/usr/bin/env python3
"""test/fuzz/seeds.py -- first inputs for the fuzz targets (test/fuzz/run).

    python3 test/fuzz/seeds.py OUTDIR

writes OUTDIR/<target>/seed-<hash> for the targets validate, template,
answer and schema.  The seeds are what the tests already use: every JSON
string literal of test/regress/sql/*.sql that is a definition or a spawn
list (validate), the output schemas of their llm nodes (schema), the
templates in them (template), plus hand-written responses in both
providers' wire formats and each failure the engine classifies (answer).

A campaign starts from test/fuzz/corpus/<target>; to give it these seeds,
copy them in and let the campaign's merge keep those that add coverage:

    python3 test/fuzz/seeds.py /tmp/seeds
    cp /tmp/seeds/validate/* test/fuzz/corpus/validate/
    test/fuzz/run fuzz validate
"""

import hashlib
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LITERAL = re.compile(r"'((?:[^']|'')*)'", re.S)
DOLLAR = re.compile(r"\$([A-Za-z_]*)\$(.*?)\$\1\$", re.S)


def literals():
    """Every quoted ('...' or $$...$$) literal of the regress and TAP tests
    that is JSON."""
    files = []
    for sub, ext in (("regress/sql", ".sql"), ("t", ".pl")):
        d = os.path.join(ROOT, "test", sub)
        files += [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(ext)]
    for path in files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        found = [m.group(1).replace("''", "'") for m in LITERAL.finditer(text)]
        found += [m.group(2) for m in DOLLAR.finditer(text)]
        for s in found:
            if not s.lstrip().startswith(("{", "[")):
                continue
            try:
                yield json.loads(s)
            except ValueError:
                continue


def templates_in(value):
    if isinstance(value, str):
        if "{{" in value:
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from templates_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from templates_in(v)


def llm_objects(value):
    """Every object with an output_schema, at any depth."""
    if isinstance(value, dict):
        if "output_schema" in value:
            yield value
        for v in value.values():
            yield from llm_objects(v)
    elif isinstance(value, list):
        for v in value:
            yield from llm_objects(v)


def nodes_of(value):
    if isinstance(value, dict) and isinstance(value.get("nodes"), list):
        return [n for n in value["nodes"] if isinstance(n, dict)]
    if isinstance(value, list) and all(isinstance(n, dict) for n in value):
        return value
    return []


def example_of(schema, depth=0):
    """A value that matches a (vectorbea subset) JSON Schema."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    t = schema.get("type")
    if isinstance(t, list):
        t = t[0] if t else None
    if t == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: example_of(v, depth + 1) for k, v in props.items()}
    if t == "array":
        return [example_of(schema.get("items") or {}, depth + 1)] * max(1, schema.get("minItems", 1))
    return {"string": "text", "integer": 3, "number": 2.5, "boolean": True,
            "null": None}.get(t, "text")


def unicode_definitions():
    """Long non-ASCII text wherever a definition takes text: messages quote
    and cut such values, which must stay valid UTF-8."""
    long = "\u00e9t\u00e9 \u00fcber \u20ac\U0001f600 " * 6
    yield {"nodes": [{"id": "a", "activity": "w", "input": {long: long}}]}
    yield {"nodes": [{"id": "a" + long, "activity": "w"}]}
    yield {"nodes": [{"id": "a", "activity": "w", "timeout": long}]}
    yield {"nodes": [{"id": "a", "kind": "llm", "llm": {
        "provider": "openai", "model": long, "prompt": long + "{{input.x}}",
        "on_exhausted": "x" + long, "output_schema": {
            "type": "object", "description": long, "properties": {long: {"enum": [long]}}}}}]}
    yield {"nodes": [{"id": "a", "kind": "approval", "approval": {"gate": "g", "approver_role": long}}]}
    yield {"nodes": [{"id": "s", "kind": "sleep", "sleep": {"until": "2030-01-01T00:00:00Z" + long}}]}
    yield [{"id": "n", "activity": "w", "depends_on": [long]}]


def schema_seeds():
    """Schemas that use every keyword, with answers that pass and fail."""
    deep = {"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"type": "array", "items": {"type": "object", "required": ["c"],
                                         "properties": {"c": {"type": ["integer", "null"]}}}}}}}}
    full = {"type": "object", "title": "t", "description": "d", "additionalProperties": False,
            "required": ["verdict", "items"],
            "properties": {"verdict": {"enum": ["yes", "no", 1, None, {"k": [1]}]},
                           "items": {"type": "array", "minItems": 1, "maxItems": 2,
                                     "items": {"type": "string"}},
                           "score": {"type": "number"}, "ok": {"type": "boolean"}}}
    yield deep, json.dumps({"a": {"b": [{"c": 1}, {"c": None}]}})
    yield deep, json.dumps({"a": {"b": [{"c": 1.5}]}})
    yield deep, json.dumps({"a": {"b": [{}]}})
    yield full, json.dumps({"verdict": "yes", "items": ["x"], "score": 1e3, "ok": True})
    yield full, json.dumps({"verdict": {"k": [1]}, "items": ["x", "y", "z"]})
    yield full, json.dumps({"verdict": "maybe", "items": []})
    yield full, json.dumps({"verdict": "no", "items": ["x"], "extra": 1})
    yield full, "```json\n" + json.dumps({"verdict": 1, "items": ["q"]}) + "\n```"
    yield {"type": "array", "items": {"type": "integer"}}, "[1, 2.0, 3e2]"
    yield {"type": ["string", "number"]}, "true"
    yield {"type": "string"}, "\"only a string\""
    yield {"type": "object", "properties": {"\u00e9t\u00e9" * 40: {"type": "integer"}}}, \
        json.dumps({"\u00e9t\u00e9" * 40: "x"}, ensure_ascii=False)


def template_seeds():
    """[template, input, upstream, run_input] beyond what the tests use."""
    up = {"a": {"items": [1, {"b": "two"}], "text": "t", "n": None}, "b": "plain"}
    yield ["{{ input.x.0.y }} and {{run.input.name}}", {"x": [{"y": "z"}]}, up, {"name": "n"}]
    yield ["{{upstream.a.output}} / {{upstream.b.output}}", {}, up, {}]
    yield ["{{upstream.a.output.items.1.b}}{{upstream.a.output.n}}", {}, up, {}]
    yield ["unclosed {{input.x", {}, {}, {}]
    yield ["{{run.output}}", {}, {}, {}]
    yield ["{{}}", {}, {}, {}]
    yield [{"list": "{{upstream.a.output.items}}", "text": "n={{run.input.n}}", "k": [1, "{{input}}"]},
           {"q": 1}, up, {"n": 2}]
    yield ["{{input}}", "a scalar input", {}, 5]


def answer_seeds():
    """HTTP responses as target_answer.c reads them."""
    def openai(text, usage=(12, 5)):
        return json.dumps({"id": "c1", "object": "chat.completion", "model": "gpt-4o-mini",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}})

    def anthropic(text, usage=(12, 5)):
        return json.dumps({"id": "m1", "type": "message", "model": "claude-sonnet-4",
                           "content": [{"type": "text", "text": text}],
                           "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}})

    def error(message):
        return json.dumps({"error": {"message": message, "type": "invalid_request_error"}})

    spawn = json.dumps({"spawn": [{"id": "w1", "activity": "work", "input": {"n": 1}},
                                  {"id": "w2", "activity": "review", "depends_on": ["w1"]}]})
    spawn_llm = json.dumps({"spawn": [{"id": "sub", "kind": "llm", "llm": {
        "provider": "openai", "model": "m", "prompt": "go {{input.x}}"}}]})
    yield "openai plain 200\n\n" + openai("a plain answer")
    yield "anthropic plain 200\n\n" + anthropic("a plain answer")
    yield "openai schema 200\n\n" + openai(json.dumps({"answer": "yes", "score": 4, "tags": ["a"]}))
    yield "openai schema 200\n\n" + openai("```json\n{\"answer\": \"fenced\"}\n```")
    yield "anthropic schema 200\n\n" + anthropic(json.dumps({"score": "high"}))
    yield "openai spawn 200\n\n" + openai(spawn)
    yield "anthropic spawn 200\n\n" + anthropic(spawn_llm)
    yield "openai spawn 200\n\n" + openai(json.dumps({"spawn": None, "note": "nothing to add"}))
    yield "openai plain 200\n\n" + openai("x", (-1, 5))
    yield "openai plain 200\n\nthis is not json {"
    yield "openai plain 429\nretry-after: 2\n\n" + error("Rate limit reached")
    yield "anthropic plain 429\nretry-after: Wed, 21 Oct 2026 07:28:00 GMT\n\n" + error("slow down")
    yield ("openai plain 200\nx-ratelimit-remaining-requests: 0\nx-ratelimit-reset-requests: 6m0s\n\n"
           + openai("last one"))
    yield ("anthropic plain 200\nanthropic-ratelimit-requests-remaining: 0\n"
           "anthropic-ratelimit-requests-reset: 2026-12-03T12:00:00Z\n\n" + anthropic("last one"))
    yield "openai plain 401\n\n" + error("Incorrect API key provided: sk-FUZZ-q7Rk2Wx9Lm4Tz8Np3Vb6")
    yield "openai plain 500\n\n" + error("server error")
    yield "openai plain 0 28\ncurl-error: Operation timed out after 30000 milliseconds\n\n"
    yield "openai plain 0 7\ncurl-error: Failed to connect to 10.0.0.1 port 443\n\n"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    seeds = {t: set() for t in ("validate", "template", "answer", "schema")}
    for value in literals():
        nodes = nodes_of(value)
        if nodes:
            seeds["validate"].add(json.dumps(value))
        for llm in llm_objects(value):
            schema = llm["output_schema"]
            seeds["schema"].add(json.dumps([schema, json.dumps(example_of(schema))]))
            seeds["schema"].add(json.dumps([schema, "not json at all"]))
        if not nodes:
            for t in templates_in(value):
                seeds["template"].add(json.dumps([t, {"x": 1}, {"plan": {"summary": "s"}}, {"team": "a"}]))
        for node in nodes:
            deps = node.get("depends_on") if isinstance(node.get("depends_on"), list) else []
            for t in templates_in(node):
                upstream = {d: {"x": 1, "items": [1, 2], "summary": "s"} for d in deps if isinstance(d, str)}
                seeds["template"].add(json.dumps([t, {"tone": "dry", "x": {"y": [1, "two"]}},
                                                  upstream, {"topic": "t", "n": 3}]))
            if isinstance(node.get("input"), (dict, list)) and list(templates_in(node["input"])):
                seeds["template"].add(json.dumps([node["input"], {}, {d: {"items": [1]} for d in deps
                                                                       if isinstance(d, str)}, {"n": 1}]))
    for schema, answer in schema_seeds():
        seeds["schema"].add(json.dumps([schema, answer]))
    for t in template_seeds():
        seeds["template"].add(json.dumps(t))
    for d in unicode_definitions():
        seeds["validate"].add(json.dumps(d, ensure_ascii=False))
    seeds["answer"].update(answer_seeds())
    for target, items in seeds.items():
        os.makedirs(os.path.join(out, target), exist_ok=True)
        for s in sorted(items):
            data = s.encode("utf-8")
            name = "seed-" + hashlib.sha1(data).hexdigest()
            with open(os.path.join(out, target, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(items)} seeds")


if __name__ == "__main__":
    main()
