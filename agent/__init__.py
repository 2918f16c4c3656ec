"""The classroom kit's agent: capture, encode once, stream to every pupil over WebRTC (WHEP)."""

__version__ = "0.1.0"
