"""Serializers schemathesis lacks, for the media types Herald's API takes."""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    # The import body is an exported log: one JSON value a line. A generated string is
    # sent as it is (mostly refused with 400), anything else as one line of JSON.
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode() + b"\n"
