"""Schemathesis hooks for the service's change streams (loaded through
SCHEMATHESIS_HOOKS=schemathesis_hooks with this folder on PYTHONPATH).

A change stream never ends. Schemathesis reads a `text/event-stream` answer
only until the request timeout and then judges what arrived; the streams'
other two formats (`application/x-ndjson`, `application/octet-stream`) are the
same endless body, so they are read the same way: the short read timeout of
the run, instead of waiting forever for an end that never comes.
"""
import json

import schemathesis
import schemathesis.transport.requests as transport

_STREAMS = {"text/event-stream", "application/x-ndjson", "application/octet-stream"}
_is_event_stream = transport.is_event_stream


def _is_stream(content_type):
    if content_type and content_type.split(";")[0].strip().lower() in _STREAMS:
        return True
    return _is_event_stream(content_type)


transport.is_event_stream = _is_stream


# Four rules of the API are about state, not syntax, and no schema can say
# them: a nextToken is valid only for a listing still held (an opaque token
# of one that is not gets 400 InvalidNextToken); a stream may start only
# within the retained history (400/410 EntityVersionOutOfRange); snapshot=true
# cannot be combined with a start version (400 InvalidParameter); a list
# `at=` must lie within the retained history and not in the future (400
# InvalidAt, 410 HistoryExpired). A schema-valid request rejected for one of
# these reasons, and only these, is not a disagreement with the document;
# every other rejection still fails.
def _starts_at_a_version(q, h):
    return q.get("entityVersion") not in (None, "") or bool(h.get("Last-Event-ID"))


_STATEFUL = {
    "InvalidNextToken": lambda q, h: bool(q.get("nextToken")),
    "EntityVersionOutOfRange": _starts_at_a_version,
    "InvalidParameter": lambda q, h: str(q.get("snapshot")).lower() == "true" and _starts_at_a_version(q, h),
    "InvalidAt": lambda q, h: q.get("at") not in (None, ""),
    "HistoryExpired": lambda q, h: q.get("at") not in (None, ""),
}


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if getattr(failure, "code", None) != "ST202" or response.status_code not in (400, 410):
        return True
    query, headers = case.query or {}, case.headers or {}
    if case.method.upper() == "HEAD":
        # No body to read the reason from: the request must hold one of them.
        return not any(rule(query, headers) for rule in _STATEFUL.values())
    try:
        code = json.loads(response.content)["code"]
    except (ValueError, KeyError, TypeError):
        return True
    rule = _STATEFUL.get(code)
    return not (rule and rule(query, headers))
