"""Process limits both services raise at start-up."""

from __future__ import annotations

import resource


def raise_open_files_limit() -> int:
    """Lift the soft open-files limit to the hard one; returns the limit now in force.

    systemd starts services with a soft limit of 1,024 unless ``LimitNOFILE=`` says otherwise;
    every connection (a pupil, a kit's link, an attacker's) holds one descriptor. Measured on
    the kit before this: 1,100 slow connections exhausted 1,024 and the kit lost its server
    link (``EMFILE``). The units set ``LimitNOFILE=``; this covers a hand-started process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft
