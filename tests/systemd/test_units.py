"""The unit files: ``systemd-analyze verify`` finds nothing to say, and the services' exposure
(``systemd-analyze security``) stays rated OK or better."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import HttpConfig, parse_host_port
from tests.systemd.units import (
    GOOD_RATINGS,
    SYSTEM_UNITS,
    UNITS,
    UNITS_DIR,
    analyze,
    exec_paths,
    exposure,
    scratch_root,
)


def our_units() -> dict[str, str]:
    return {name: (UNITS_DIR / name).read_text(encoding="utf-8") for name in UNITS}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scratch_root(tmp_path_factory.mktemp("root"), our_units())


def test_all_three_units_are_there() -> None:
    assert UNITS == ["kit-agent.service", "kit-kiosk.service", "kit-provisioning.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_verify_is_silent(root: Path, unit: str) -> None:
    result = analyze("verify", f"--root={root}", unit)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    units = our_units()
    units["kit-agent.service"] = units["kit-agent.service"].replace(
        "ProtectSystem=strict", "ProtectSytem=strict"
    )
    root = scratch_root(tmp_path, units)
    result = analyze("verify", f"--root={root}", "kit-agent.service")
    assert "Unknown key 'ProtectSytem'" in result.stderr


@pytest.mark.parametrize("unit", ["kit-agent.service", "kit-provisioning.service"])
def test_exposure_is_ok_or_better(root: Path, unit: str) -> None:
    level, rating = exposure(root, unit)
    assert rating in GOOD_RATINGS, f"{unit}: exposure {level} {rating}"
    assert level <= 2.0, f"{unit}: exposure {level} (was 1.5 and 1.2: see docs/systemd.md)"


def test_exposure_measures_the_hardening(tmp_path: Path) -> None:
    """Without its hardening section the agent's unit rates far worse: the check is real."""
    units = our_units()
    text = units["kit-agent.service"]
    units["kit-agent.service"] = text[: text.index("# -- hardening")] + "\n[Install]\n"
    level, rating = exposure(scratch_root(tmp_path, units), "kit-agent.service")
    assert level > 5.0 and rating not in GOOD_RATINGS


def test_the_services_run_what_the_installers_install() -> None:
    units = our_units()
    assert exec_paths(units["kit-agent.service"]) == ["/opt/kit/venv/bin/kit-agent", "/bin/kill"]
    assert exec_paths(units["kit-provisioning.service"]) == [
        "/opt/kit-provisioning/venv/bin/kit-provisioning"
    ]
    assert exec_paths(units["kit-kiosk.service"]) == ["/usr/bin/cage"]


def test_the_kiosk_opens_the_agents_kiosk_page() -> None:
    _, port = parse_host_port(HttpConfig().listen)
    assert f"--app=http://127.0.0.1:{port}/ " in our_units()["kit-kiosk.service"]


def install_drop_in(root: Path, unit: str, name: str, program: str) -> str:
    """systemd/``name`` installed as ``unit``'s drop-in in the scratch ``root``, with a stand-in
    for the packaged ``program`` (verify wants it executable); returns the drop-in's text."""
    drop_in = (UNITS_DIR / name).read_text(encoding="utf-8")
    target = root / f"etc/systemd/system/{unit}.d/kit-provisioning.conf"
    target.parent.mkdir(parents=True)
    target.write_text(drop_in, encoding="utf-8")
    stand_in = root / program.lstrip("/")
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    stand_in.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stand_in.chmod(0o755)
    return drop_in


def test_coturn_drop_in_verifies_and_confines_coturn(tmp_path: Path) -> None:
    """systemd/coturn-kit.conf over Debian's coturn.service (install-server.sh --turn): verify is
    silent, and the exposure drops from the package's 9.0 UNSAFE to OK (measured 3.4)."""
    if not (SYSTEM_UNITS / "coturn.service").exists():
        pytest.skip("Debian's coturn is not installed (make setup installs it)")
    root = scratch_root(tmp_path, {})
    bare = exposure(root, "coturn.service")
    drop_in = install_drop_in(root, "coturn.service", "coturn-kit.conf", "/usr/bin/turnserver")
    assert exec_paths(drop_in) == ["/usr/bin/turnserver"]
    result = analyze("verify", f"--root={root}", "coturn.service")
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), result.stderr
    level, rating = exposure(root, "coturn.service")
    assert rating in GOOD_RATINGS and level <= 4.0, f"coturn: exposure {level} {rating}"
    assert bare[0] > level + 3, f"the drop-in changed little: {bare} → {level}"


def test_haproxy_drop_in_verifies_and_confines_haproxy(tmp_path: Path) -> None:
    """systemd/haproxy-kit.conf over Debian's haproxy.service (install-server.sh --lb-node):
    verify is silent, HAProxy reads the configuration install-server.sh writes, and the
    exposure drops below the package's."""
    if not (SYSTEM_UNITS / "haproxy.service").exists():
        pytest.skip("Debian's haproxy is not installed (make setup installs it)")
    root = scratch_root(tmp_path, {})
    bare = exposure(root, "haproxy.service")
    drop_in = install_drop_in(root, "haproxy.service", "haproxy-kit.conf", "/usr/sbin/haproxy")
    assert "Environment=CONFIG=/etc/haproxy/kit-provisioning.cfg" in drop_in.splitlines()
    result = analyze("verify", f"--root={root}", "haproxy.service")
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), result.stderr
    level, _rating = exposure(root, "haproxy.service")
    print({"haproxy_exposure": {"package": bare, "with_drop_in": level}})
    assert bare[0] > level + 1.5, f"the drop-in changed little: {bare} → {level}"
