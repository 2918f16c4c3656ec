"""``make bench``: the figures quoted in docs/PERFORMANCE.md (``python -m bench``)."""
