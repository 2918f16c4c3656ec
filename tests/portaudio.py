"""The mark for tests that open real PortAudio streams (through ALSA's plugins, no sound card):
skipped where libportaudio2 is missing, as ``make setup`` installs it."""

from __future__ import annotations

import pytest


def _portaudio_available() -> bool:
    try:
        import sounddevice  # noqa: F401
    except (OSError, ImportError):
        return False
    return True


NEEDS_PORTAUDIO = pytest.mark.skipif(not _portaudio_available(), reason="no libportaudio2")
