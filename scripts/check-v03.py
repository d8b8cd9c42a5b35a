#!/usr/bin/env python3
"""Checks recorded responses of the v0.3 paths against the original v0.3
swagger document, the way a client generated from it reads them: a body is
decoded by its content type (application/json is parsed as JSON, text/plain
is taken as a string, a stream is read line by line as JSON items) and the
result is validated against the response schema the document declares for
that status.

  check-v03.py SWAGGER SAMPLES --expect all|success-only

SAMPLES is a JSON list of {operation, status, content_type, body} records
(streams: "lines" instead of "body"). With "all", every sample must conform;
with "success-only" (server.v03_errors = false), every 2xx must conform and
every error must not (a JSON object where v0.3 declared a string), which is
the difference the setting exists for. Exit 0 when the expectation holds.
"""
import json
import sys

import jsonschema


def main():
    swagger_path, samples_path, _, expect = sys.argv[1:5]
    swagger = json.load(open(swagger_path))
    samples = json.load(open(samples_path))
    ops = {}
    for path, item in swagger["paths"].items():
        for method, op in item.items():
            ops[op["operationId"]] = op
    definitions = swagger["definitions"]

    def validate(schema, value):
        full = dict(schema, definitions=definitions)
        jsonschema.Draft4Validator(full).validate(value)

    failures = 0
    for s in samples:
        op = ops[s["operation"]]
        status = str(s["status"])
        response = op["responses"].get(status) or op["responses"].get("default")
        label = f'{s["operation"]} {status} {s["content_type"]}'
        problem = None
        if response is None:
            problem = f"status {status} is not declared"
        else:
            schema = response.get("schema", {})
            ctype = (s["content_type"] or "").split(";")[0].strip().lower()
            try:
                if "lines" in s:
                    if ctype != "application/octet-stream":
                        raise ValueError(f"stream sent as {ctype}; v0.3 clients consume application/octet-stream")
                    item = "#/definitions/Task" if "Task" in s["operation"] else "#/definitions/ContainerInstance"
                    for line in s["lines"]:
                        validate({"$ref": item}, json.loads(line))
                elif ctype == "application/json":
                    validate(schema, json.loads(s["body"]))
                elif ctype == "text/plain":
                    validate(schema, s["body"])
                else:
                    raise ValueError(f"no consumer for {ctype}")
            except (ValueError, jsonschema.ValidationError) as e:
                problem = str(e).splitlines()[0]
        error_status = not status.startswith("2")
        if expect == "all" or not error_status:
            ok = problem is None
        else:
            ok = problem is not None
        print(("ok   " if ok else "FAIL ") + label + (f": {problem}" if problem else ": conforms"))
        failures += not ok
    print(f"check-v03: {len(samples) - failures} of {len(samples)} samples as expected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
