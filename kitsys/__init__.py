"""Running under systemd: readiness and watchdog notifications (``sd_notify``), logs to the
journal with structured fields, and the watchdog pinger that vouches for a healthy main loop.

Shared by the kit agent and the provisioning server; it imports neither. Outside systemd (no
``NOTIFY_SOCKET``, no ``JOURNAL_STREAM``) everything here is a no-op or plain stderr.
"""
