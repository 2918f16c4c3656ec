"""The kit's health reports between being made and being stored: pure bookkeeping, no I/O.

A report made while the server link is down waits in the *backlog* and is sent, marked
``queued``, on reconnection. A report sent on a live link waits in *unacknowledged* until the
server says (``stored``, docs/protocol.md) that it is committed: a server node that dies with
reports in its write queue would otherwise lose them. When the link ends, the unacknowledged go
back to the front of the backlog, in order, and are sent again to whichever node the kit reaches
next; the server's history stores a report once (unique per kit and ``sent_at``).

Only a server that has acknowledged at least once gets reports again: a server from before
``stored`` never acknowledges, and sending it everything again would only duplicate its history.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

from kitlink import Health

BACKLOG_MAX = 360
"""Reports kept while the link is down, and unacknowledged ones (an hour at the default 10 s);
beyond it the oldest go first, and the server is told how many were dropped."""


class Reports:
    def __init__(self, limit: int = BACKLOG_MAX) -> None:
        self.limit = limit
        self.backlog: collections.deque[Health] = collections.deque()
        """To send on reconnection, oldest first."""
        self.unacknowledged: collections.deque[Health] = collections.deque()
        """Sent on the current link, not yet stored, oldest first."""
        self.dropped = 0
        """Reports lost to the bound since the last one the server was told of."""
        self.server_acknowledges = False
        """The server has sent ``stored`` at least once (kept across links)."""
        self.sent_again = 0
        """Reports sent once more after a link ended before their acknowledgement."""

    def __len__(self) -> int:
        return len(self.backlog)

    def made_offline(self, health: Health) -> None:
        """A report made while the link is down."""
        self.backlog.append(health)
        self._bound()

    def sent(self, health: Health) -> None:
        """A report (live or from the backlog) written to the link."""
        self.unacknowledged.append(health)
        while len(self.unacknowledged) > self.limit:
            self.unacknowledged.popleft()  # a server that stopped acknowledging: not kept

    def stored(self, upto: float) -> int:
        """The server's ``stored``: every report made at or before ``upto`` is committed.
        Returns how many this acknowledged."""
        self.server_acknowledges = True
        count = 0
        while self.unacknowledged and self.unacknowledged[0].sent_at <= upto:
            self.unacknowledged.popleft()
            count += 1
        return count

    def link_lost(self) -> None:
        """The link ended: what it never acknowledged goes back to the front of the backlog
        (from a server that acknowledges; otherwise it is forgotten as before)."""
        if self.server_acknowledges and self.unacknowledged:
            self.sent_again += len(self.unacknowledged)
            self.backlog.extendleft(reversed(self.unacknowledged))
            self._bound()
        self.unacknowledged.clear()

    def to_send(self) -> Iterator[Health]:
        """The backlog, oldest first, each marked ``queued``; the first carries the count of
        reports dropped. A report leaves the backlog only when the caller asks for the next
        (it was sent): a link lost meanwhile keeps the rest."""
        while self.backlog:
            health = self.backlog[0].model_copy(update={"queued": True, "dropped": self.dropped})
            yield health
            self.backlog.popleft()
            self.dropped = 0
            self.sent(health)

    def _bound(self) -> None:
        while len(self.backlog) > self.limit:
            self.backlog.popleft()
            self.dropped += 1
