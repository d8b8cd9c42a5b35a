#!/usr/bin/env python3
"""Checks swagger/openapi.json against the implementation.

Usage: check-openapi.py DOC SAMPLES

DOC is the OpenAPI document; it must be a valid OpenAPI 3.1 document.
SAMPLES is a JSON list of real responses recorded by the integration test
(tests/it/openapi.rs), each {"path", "method", "status", "content_type",
"body"} with "lines" instead of "body" for a stream. Every sample must be
documented (path, method, status, content type) and its body (or every line)
must match the schema. Every documented operation must have a 200 sample.
Prints each problem and exits 1 if there is any.
"""
import json
import sys

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate


def main(doc_path, samples_path):
    doc = json.load(open(doc_path))
    validate(doc)
    samples = json.load(open(samples_path))
    problems = []
    covered = set()

    def check(value, schema, where):
        root = dict(schema)
        root["components"] = doc["components"]
        for e in Draft202012Validator(root).iter_errors(value):
            path = "/".join(str(p) for p in e.absolute_path)
            problems.append(f"{where}: at /{path}: {e.message}")

    for s in samples:
        where = f'{s["method"].upper()} {s["path"]} -> {s["status"]}'
        ops = doc["paths"].get(s["path"], {})
        op = ops.get(s["method"])
        if op is None and s["status"] == 405:
            # Every other method of a GET path answers the GET's documented 405.
            op = ops.get("get")
        if op is None:
            problems.append(f"{where}: operation not documented")
            continue
        response = op["responses"].get(str(s["status"]))
        if response is None:
            problems.append(f"{where}: status not documented")
            continue
        if s["status"] == 200:
            covered.add((s["path"], s["method"]))
        ctype = (s.get("content_type") or "").split(";")[0].strip()
        content = response.get("content", {})
        if s["method"] == "head":
            # HEAD: the GET's headers and no body; its content type is the GET's.
            if s.get("body") not in (None, ""):
                problems.append(f"{where}: HEAD sent a body")
            get = ops["get"]["responses"].get(str(s["status"]), {}).get("content", {})
            if ctype and ctype not in get:
                problems.append(f"{where}: content type {ctype!r} not that of GET ({list(get)})")
            continue
        if ctype not in content:
            problems.append(f"{where}: content type {ctype!r} not documented ({list(content)})")
            continue
        schema = content[ctype]["schema"]
        if "lines" in s:
            for i, line in enumerate(s["lines"]):
                check(line, schema, f"{where} line {i + 1}")
        elif "body" in s and ctype.endswith("json"):
            check(s["body"], schema, where)
    for path, ops in doc["paths"].items():
        for method in ops:
            if (path, method) not in covered:
                problems.append(f"{method.upper()} {path}: no 200 response was checked")
    for p in problems:
        print(p)
    print(f"{len(samples)} responses checked against {doc_path}: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
