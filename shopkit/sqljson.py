"""SQL that writes a JSON object of a row's columns, under the names a shape gives them.

A shape is a mapping written once in a service's domain (the event payloads, the copies an
order keeps): each JSON key and the column its value comes from. Statements built from it write
exactly that shape; the names are code, never input, and are checked to be plain names.
"""

import re
from collections.abc import Mapping

_PLAIN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def json_object(row: str, shape: Mapping[str, str]) -> str:
    """`jsonb_build_object(...)` of `row`'s columns (`row` a relation's name or alias)."""
    for name in (row, *shape, *shape.values()):
        if not _PLAIN_NAME.match(name):
            raise ValueError(f"not a plain name: {name!r}")
    return "jsonb_build_object(" + ", ".join(
        f"'{key}', {row}.{column}" for key, column in shape.items()
    ) + ")"

