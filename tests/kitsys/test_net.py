"""The LAN address the kit prints in join links and ``make demo`` in its URLs (kitsys/net.py)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from kitsys import net


def test_the_address_is_this_machines_ipv4() -> None:
    address = ipaddress.IPv4Address(net.lan_address())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((str(address), 0))  # one of ours: it can be bound


def test_no_route_falls_back_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unrouted(socket.socket):
        def connect(self, address: Any) -> None:
            raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(net.socket, "socket", Unrouted)
    assert net.lan_address() == "127.0.0.1"
