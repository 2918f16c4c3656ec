"""Problems of the kit itself (not of a class) that the kiosk must show in plain words.

The session reports what concerns a class (a camera unplugged while live); this registry holds
what concerns the kit: its configuration file could not be used, its disk is full. Each problem
has a stable ``code`` the kiosk translates (kiosk/static/kiosk.js), a technical ``detail`` for
the journal and the admin, and optional parameters (``fallback``: what the kit runs on instead).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .media.pipeline import MediaPipeline

SPEAKER_UNAVAILABLE = "speaker_unavailable"


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


def speaker_problems(pipeline: MediaPipeline | None) -> list[dict[str, Any]]:
    """The classroom speaker, while a pupil has the floor and it is missing or failing.

    Only then: nobody needs the speaker otherwise, and a kit whose ``[speaker] device`` is
    absent (no sound card, as on the test machines) is not a problem until a pupil is given the
    floor; from then until the floor ends the kiosk says the room cannot hear them."""
    talkback = pipeline.talkback if pipeline is not None else None
    if talkback is None or not talkback.mixer.voices():
        return []
    status = talkback.speaker.status()
    if status["state"] not in ("missing", "error"):
        return []
    detail = f"speaker {status['device']!r}: {status['state']} ({status['detail']})"
    return [{"code": SPEAKER_UNAVAILABLE, "detail": detail}]
