"""TURN REST credentials, TURN URLs and the secret file (provisioning/turn.py); coturn itself
accepting them is tests/provisioning/test_turn_coturn.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.errors import ConfigError
from provisioning.turn import TurnCredential, mint, parse_turn_url, read_secret_file

SECRET = b"north-wind-secret-0123"


def test_known_vector() -> None:
    # Computed apart from the code under test:
    #   printf '1700000000:class-42' | openssl dgst -sha1 -hmac 'north-wind-secret-0123' -binary \
    #     | base64
    assert mint(SECRET, "class-42", 1_700_000_000) == TurnCredential(
        "1700000000:class-42", "UTaVxrMUso4ELqWhElBtyAGXmXE=", 1_700_000_000
    )


def test_credentials_differ_by_subject_expiry_and_secret() -> None:
    base = mint(SECRET, "class-42", 1_700_000_000)
    assert mint(SECRET, "class-43", 1_700_000_000).password != base.password
    assert mint(SECRET, "class-42", 1_700_000_001).password != base.password
    assert mint(SECRET + b"x", "class-42", 1_700_000_000).password != base.password


@pytest.mark.parametrize(
    ("subject", "expires_at"),
    [("", 1), ("a:b", 1), ("é", 1), ("x" * 65, 1), ("ok", 0), ("ok", -5), ("ok", True)],
)
def test_bad_subject_or_expiry_is_refused(subject: str, expires_at: int) -> None:
    with pytest.raises(ConfigError, match="TURN credential"):
        mint(SECRET, subject, expires_at)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        mint(b"", "class-42", 1)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("turn:turn.example.fr:3478?transport=udp", "turn-udp"),
        ("turn:turn.example.fr:443?transport=tcp", "turn-tcp"),
        ("turns:turn.example.fr:443?transport=tcp", "turn-tls"),
        ("turn:203.0.113.10:3478?transport=udp", "turn-udp"),
        ("turns:[2001:db8::1]:5349?transport=tcp", "turn-tls"),
    ],
)
def test_good_turn_urls(text: str, kind: str) -> None:
    url = parse_turn_url(text)
    assert (url.kind, str(url)) == (kind, text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("turn:turn.example.fr?transport=udp", "expected turn:HOST:PORT"),
        ("turn:turn.example.fr:3478", "expected turn:HOST:PORT"),
        ("turn:user@turn.example.fr:3478?transport=udp", "not a host name"),
        ("turn:turn.example.fr:3478?transport=udp&x=1", "expected turn:HOST:PORT"),
        ("turns:turn.example.fr:5349?transport=udp", "needs transport=tcp"),
        ("turn:turn.example.fr:3478?transport=sctp", "must be udp or tcp"),
        ("stun:turn.example.fr:3478?transport=udp", "must be turn or turns"),
        ("TURN:turn.example.fr:3478?transport=udp", "expected turn:HOST:PORT"),
        ("turn:turn.example.fr:0?transport=udp", "between 1 and 65535"),
        ("turn:turn.example.fr:70000?transport=udp", "between 1 and 65535"),
        ("turn:300.1.2.3:3478?transport=udp", "not an IPv4 address"),
        ("turn:[zz::1]:3478?transport=udp", "not an IPv6 address"),
        ("turn:-bad-.example:3478?transport=udp", "not a host name"),
        ("turn: host:3478?transport=udp", "not a host name"),
        ("", "expected turn:HOST:PORT"),
    ],
)
def test_bad_turn_urls_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        parse_turn_url(text)


def secret_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "turn-secret"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_secret_file_is_read_without_its_newline(tmp_path: Path) -> None:
    assert read_secret_file(secret_file(tmp_path, SECRET + b"\n")) == SECRET
    assert read_secret_file(secret_file(tmp_path, SECRET, 0o400)) == SECRET


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o666])
def test_secret_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(ConfigError, match=f"mode {mode:04o}.*chmod 600"):
        read_secret_file(secret_file(tmp_path, SECRET, mode))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"\n", "empty"),
        (b"short\n", "at least 16"),
        (b"two words secret value\n", "printable ASCII"),
        (SECRET + b"\n\n", "printable ASCII"),
        ("sécret-sécret-sécret".encode(), "printable ASCII"),
        (b"x" * 5000, "larger than"),
    ],
)
def test_bad_secret_file_content_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        read_secret_file(secret_file(tmp_path, content))


def test_missing_secret_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        read_secret_file(tmp_path / "absent")
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_secret_file(directory)
