"""Shared tools of the fuzz tests (``tests/**/test_*_fuzz.py``): Hypothesis profiles, mutations
of real messages, and the bounds every parser must keep.

Profiles (``HYPOTHESIS_PROFILE``): ``ci``, the default, runs a bounded number of examples per
test with a fixed seed, so ``make test`` stays fast and gives the same verdict every run;
``fuzz`` (``make fuzz``) runs many more, freshly random, and keeps what fails in
``.hypothesis/`` so that the next run tries it first.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psutil
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=timedelta(seconds=2),  # generous: two cores shared with other tests
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")),
    deadline=timedelta(seconds=2),
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(ci: int) -> int:
    """``ci`` examples under the ``ci`` profile (for the tests that drive a real server or
    peer, slower per example), the profile's own number otherwise."""
    if settings().max_examples == settings.get_profile("ci").max_examples:
        return ci
    return int(settings().max_examples)


# -- bounds ------------------------------------------------------------------------------------


@contextlib.contextmanager
def bounded(seconds: float = 1.0, megabytes: float = 16.0) -> Iterator[None]:
    """Fail if the block takes longer than ``seconds`` (CPU time) or grows memory by more than
    ``megabytes``: Python allocations at their peak, traced, when this is the only thread; the
    process's resident size otherwise (tracemalloc crashes Python 3.11 when it stops while
    another thread allocates: the encoders of a live class)."""
    traced = threading.active_count() == 1
    if traced:
        tracemalloc.start()
    rss = psutil.Process().memory_info().rss
    started = time.process_time()
    try:
        yield
    finally:
        elapsed = time.process_time() - started
        if traced:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        else:
            peak = psutil.Process().memory_info().rss - rss
    assert elapsed < seconds, f"took {elapsed:.2f} s of CPU"
    assert peak < megabytes * 1e6, f"allocated {peak / 1e6:.1f} MB"


# -- mutations ---------------------------------------------------------------------------------

NASTY_TOKENS: list[bytes] = [
    b"1e999",
    b"-1e999",
    b"NaN",
    b"Infinity",
    b"-0",
    b"9" * 5000,
    b"-" + b"9" * 40,
    b"18446744073709551616",
    b"0.0000000000000000000000000000001",
    b"[" * 3000,
    b"{" * 1500,
    b'{"a":' * 1000,
    b"[" * 3000 + b"]" * 3000,
    b'"\\ud800"',
    b'"\\u0000"',
    b"\x00",
    b"\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xef\xbb\xbf",
    "\u202e".encode(),
    "\u200d\u200b\ufeff".encode(),
    ("e" + "\u0301" * 200).encode(),
    "\U0001f600".encode(),
    "ﷺ".encode() * 100,
    b"\r\n",
    b"\r",
    b"\n" * 100,
    b'"',
    b"\\",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b'""',
    b" " * 1000,
]


def _flip(data: bytes, draw: Callable[..., Any]) -> bytes:
    if not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]


def _truncate(data: bytes, draw: Callable[..., Any]) -> bytes:
    return data[: draw(st.integers(0, len(data)))]


def _cut_middle(data: bytes, draw: Callable[..., Any]) -> bytes:
    a = draw(st.integers(0, len(data)))
    b = draw(st.integers(a, len(data)))
    return data[:a] + data[b:]


def _duplicate(data: bytes, draw: Callable[..., Any]) -> bytes:
    a = draw(st.integers(0, len(data)))
    b = draw(st.integers(a, min(len(data), a + 200)))
    at = draw(st.integers(0, len(data)))
    times = draw(st.sampled_from([1, 2, 10, 100, 1000]))
    return data[:at] + data[a:b] * times + data[at:]


def _insert(data: bytes, draw: Callable[..., Any]) -> bytes:
    at = draw(st.integers(0, len(data)))
    token = draw(
        st.sampled_from(NASTY_TOKENS) if draw(st.integers(0, 3)) else st.binary(max_size=16)
    )
    return data[:at] + token + data[at:]


def _replace_number(data: bytes, draw: Callable[..., Any]) -> bytes:
    digits = [i for i, byte in enumerate(data) if 48 <= byte <= 57]
    if not digits:
        return data
    at = draw(st.sampled_from(digits))
    end = at
    while end < len(data) and 48 <= data[end] <= 57:
        end += 1
    number = draw(st.sampled_from(NASTY_TOKENS[:9]) | st.integers().map(lambda n: b"%d" % n))
    return data[:at] + number + data[end:]


MUTATIONS = [_flip, _truncate, _cut_middle, _duplicate, _insert, _insert, _replace_number]


@st.composite
def mutated(draw: Callable[..., Any], seeds: list[bytes], max_steps: int = 4) -> bytes:
    """One of ``seeds`` (real, valid messages) after 1 to ``max_steps`` random mutations: byte
    flips, truncation, cut, duplication, inserted nasty tokens (huge numbers, deep nesting,
    odd unicode, invalid UTF-8), numbers replaced by extreme ones."""
    data = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, max_steps))):
        data = draw(st.sampled_from(MUTATIONS))(data, draw)
    return bytes(data)


ODD_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=[]),  # controls, bidi marks, unassigned
    max_size=300,
)
"""Strings of any Unicode code point that UTF-8 can carry."""

KEYS = ["type", "name", "v", "é" * 100, "\u202e" * 70, "\U0001f600" * 40]
"""Keys a peer may add: known ones, and long non-ASCII ones (echoed in refusals?)."""
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()  # NaN and ±Infinity too: json.dumps writes them, as a careless peer would
    | ODD_TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(ODD_TEXT | st.sampled_from(KEYS), children, max_size=5)
    ),
    max_leaves=20,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON document (dict keys and list indices)."""
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += paths(child, (*prefix, index))
    return out


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replaced(copy[head], rest, new)
    return copy


DEEP = "\x00deep\x00"
"""Stands for a deeply nested value in a document (json.dumps itself would recurse on it)."""
_DEEP_DUMPED = json.dumps(DEEP)


@st.composite
def json_variants(draw: Callable[..., Any], seeds: list[dict[str, Any]]) -> bytes:
    """A valid message of ``seeds`` with one value replaced by any JSON value (or one nested
    up to 3,000 deep), a key added or removed: structure-aware mutations, which reach the
    validation behind the parser."""
    message = draw(st.sampled_from(seeds))
    path = draw(st.sampled_from(paths(message)))
    action = draw(st.sampled_from(["replace", "add", "remove", "deep"]))
    if action == "deep":
        message = _replaced(message, path, DEEP)
    elif action == "replace" or not path:
        message = _replaced(message, path, draw(JSON_VALUES))
    elif action == "add":
        parent = path[:-1]
        target = message
        for key in parent:
            target = target[key]
        if isinstance(target, dict):
            extra = {**target, draw(ODD_TEXT | st.sampled_from(KEYS)): draw(JSON_VALUES)}
            message = _replaced(message, parent, extra)
    else:
        parent, key = path[:-1], path[-1]
        target = message
        for step in parent:
            target = target[step]
        if isinstance(target, dict):
            message = _replaced(message, parent, {k: v for k, v in target.items() if k != key})
        else:
            message = _replaced(message, parent, [v for i, v in enumerate(target) if i != key])
    text = json.dumps(message, ensure_ascii=draw(st.booleans()))
    if _DEEP_DUMPED in text:
        n = draw(st.sampled_from([10, 100, 600, 1000, 3000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"a":', "}]")]))
        text = text.replace(_DEEP_DUMPED, opener * n + "1" + closer * n)
    return text.encode()


@st.composite
def nested(draw: Callable[..., Any], max_size: int) -> bytes:
    """Arrays or objects nested as deep as ``max_size`` bytes allow (or deeper), closed or not,
    alone or as the value of a field: what makes a recursive parser recurse."""
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]")]))
    prefix = b""
    if draw(st.integers(0, 3)):  # as deep as fits, all opened, as many closed as fit
        n = (max_size - 1) // len(opener)
        closers = draw(st.integers(0, (max_size - len(prefix) - 1 - n * len(opener))))
    else:
        prefix = draw(st.sampled_from([b"", b'{"type":"hand","raised":']))
        n = draw(st.integers(0, max_size // len(opener)) | st.sampled_from([999, 1000, 2000]))
        closers = draw(st.sampled_from([n, 0]) | st.integers(0, n))
    return prefix + opener * n + b"1" + closer * (closers // len(closer))


def network_bytes(
    seeds: list[bytes], json_seeds: list[dict[str, Any]] | None = None, max_size: int = 4096
) -> st.SearchStrategy[bytes]:
    """Generated and mutated inputs for one parser whose messages are at most ``max_size``
    bytes: mutations of real messages, structure-aware variants of them (JSON protocols), deep
    nesting, any JSON value, and raw bytes."""
    options = [
        mutated(seeds),
        mutated(seeds),
        nested(max_size),
        nested(max_size),
        st.binary(max_size=2000),
        JSON_VALUES.map(_dumps),
    ]
    if json_seeds:
        options += [json_variants(json_seeds), json_variants(json_seeds)]
    return st.one_of(*options)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def strict_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses ``NaN``/``Infinity`` (not JSON: a browser's JSON.parse fails
    on them, and so would the admin UI)."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in output JSON")

    return json.loads(text, parse_constant=refuse)
