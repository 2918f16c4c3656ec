"""Problems of the kit itself (not of a class) that the kiosk must show in plain words.

The session reports what concerns a class (a camera unplugged while live); this registry holds
what concerns the kit: its configuration file could not be used, its disk is full. Each problem
has a stable ``code`` the kiosk translates (kiosk/static/kiosk.js), a technical ``detail`` for
the journal and the admin, and optional parameters (``fallback``: what the kit runs on instead).
"""

from __future__ import annotations

from typing import Any


class Problems:
    def __init__(self) -> None:
        self._active: dict[str, dict[str, Any]] = {}

    def report(self, code: str, detail: str = "", **params: str) -> None:
        self._active[code] = {"code": code, "detail": detail, **params}

    def clear(self, code: str) -> None:
        self._active.pop(code, None)

    def __contains__(self, code: object) -> bool:
        return code in self._active

    def as_list(self) -> list[dict[str, Any]]:
        """For ``GET /api/status``: in the order they were first reported."""
        return [dict(problem) for problem in self._active.values()]
