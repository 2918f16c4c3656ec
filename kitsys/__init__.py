"""Running under systemd: readiness and watchdog notifications (``sd_notify``), logs to the
journal with structured fields, and the watchdog pinger that vouches for a healthy main loop.

Also what both serve alike: the connection guard (``httpguard``), the HTTP helpers (``http``:
bounded bodies, the error middleware, security headers) and the root of the exception tree
(``errors``). Shared by the kit agent and the provisioning server; it imports neither. Outside
systemd (no ``NOTIFY_SOCKET``, no ``JOURNAL_STREAM``) everything here is a no-op or plain
stderr.
"""
