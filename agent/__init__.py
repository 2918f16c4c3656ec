"""The classroom kit's agent: capture, encode once, stream to every pupil over WebRTC (WHEP)."""

from importlib import metadata

try:  # one version, pyproject.toml's, as installed (install-kit.sh compares it)
    __version__ = metadata.version("hybrid-classroom")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+source"
