"""Fixtures of the WebRTC tests: a real coturn on loopback (tests/agent/webrtc/coturn.py)."""

from tests.agent.webrtc.coturn import coturn

__all__ = ["coturn"]
