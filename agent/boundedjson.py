"""JSON from a peer, with its nesting bounded before the parser sees it.

Python's ``json`` parser recurses once per ``[`` or ``{``: 2,000 of them (4 KB, within every
body limit of the agent) raise ``RecursionError``, which is not a ``ValueError`` and escaped the
kiosk API as a 500 with a traceback in the log. Every message the agent accepts is at most a few
levels deep, so :func:`loads` counts the depth first (one pass, strings skipped) and refuses
anything deeper than ``max_depth`` as it refuses any other bad JSON.
"""

from __future__ import annotations

import json

_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


class JsonError(ValueError):
    """Not JSON, not UTF-8, or nested deeper than allowed; the message is safe to send."""


def depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (brackets inside strings do not
    count; the text need not be valid JSON)."""
    deepest = level = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPEN:
            level += 1
            deepest = max(deepest, level)
        elif byte in _CLOSE:
            level -= 1
    return deepest


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def loads(raw: bytes, max_depth: int) -> object:
    """``json.loads(raw)``, or :class:`JsonError` if it is not UTF-8 JSON (RFC 8259: no
    ``NaN``/``Infinity``, no UTF-16) nested at most ``max_depth`` deep."""
    if depth(raw) > max_depth:
        raise JsonError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise JsonError("not JSON") from None
