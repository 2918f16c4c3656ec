"""install-kit.sh and install-server.sh against a scratch root (``ROOT=…``, which also makes
them print instead of run apt-get, useradd, chown and systemctl).

Run twice, the tree is byte for byte the same; run with a newer version, the virtualenv is
upgraded while the admin's configuration and the kit's credential stay as they were. The kit
really enrolls, on a real provisioning server. What cannot be checked here (real users, real
systemctl, cage on a seat) is listed in docs/systemd.md."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import load_config
from provisioning.turn import parse_turn_url, read_secret_file
from tests.haproxy import check_config, make_haproxy_cert, render_haproxy_config
from tests.nat import render_turn_config

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TREE_PARTS = ("agent", "kiosk", "provisioning", "kitsys", "systemd", "pyproject.toml", "README.md")

pytestmark = pytest.mark.slow


def provisioning(data: Path, *args: str) -> str:
    command = [str(VENV_BIN / "kit-provisioning"), *args, "--data-dir", str(data)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A provisioning server and an enrollment code good for one kit."""
    data = tmp_path_factory.mktemp("provisioning")
    provisioning(data, "school", "add", "0751234A", "--name", "École", "--departement", "75")
    code = provisioning(data, "enrollment-code", "create", "--school", "0751234A")
    process = subprocess.Popen(
        [str(VENV_BIN / "kit-provisioning"), "serve", "--http", "127.0.0.1:0", "--data-dir", data],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[1].removesuffix("/admin/")
        yield url, code, data
    finally:
        process.terminate()
        process.wait(30)


def source_tree(target: Path, version: str | None = None) -> Path:
    """A copy of the project to install from, at another ``version`` if given."""
    for part in TREE_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / part)
    if version is not None:
        pyproject = target / "pyproject.toml"
        text = pyproject.read_text(encoding="utf-8")
        pyproject.write_text(text.replace('version = "0.1.0"', f'version = "{version}"', 1))
    return target


def install(tree: Path, script: str, root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "ROOT": str(root),
        "KIT_PYTHON": sys.executable,
        "KIT_PIP_OPTS": "--no-deps",  # the dependencies would take minutes to download
        "KIT_ENROLL_AGENT": str(VENV_BIN / "kit-agent"),  # hence enroll with the test's agent
    }
    result = subprocess.run(
        ["sh", str(tree / "systemd" / script), *args],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stderr


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file, link and directory under ``root``: its mode and content digest."""
    tree: dict[str, tuple[int, str]] = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        if path.is_symlink():
            digest = "-> " + os.readlink(path)
        elif path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            digest = "dir"
        tree[str(path.relative_to(root))] = (mode, digest)
    return tree


def installed_version(venv: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('hybrid-classroom'))"
    return subprocess.run(
        [str(venv / "bin/python"), "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_kit_install_is_idempotent_and_upgrades_in_place(
    server: tuple[str, str, Path], tmp_path: Path
) -> None:
    url, code, data = server
    root = tmp_path / "root"
    tree = source_tree(tmp_path / "src")
    log = install(tree, "install-kit.sh", root, url, code, "Salle 12")
    credential = root / "var/lib/kit/server-link.json"
    config = root / "etc/kit/agent.toml"
    assert credential.exists() and config.exists()
    # It may hold TURN secrets: the agent's group reads it, nobody else (issue 13).
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    [kit] = json.loads(provisioning(data, "kits", "--json"))
    assert kit["name"] == "Salle 12"
    written = load_config(config)  # the default configuration is valid as it is
    assert (written.state_dir, written.camera.device) == ("/var/lib/kit", "/dev/video0")
    assert (root / "etc/systemd/system/kit-agent.service").read_bytes() == (
        REPO / "systemd/kit-agent.service"
    ).read_bytes()
    assert (root / "etc/systemd/system/kit-kiosk.service").exists()
    assert installed_version(root / "opt/kit/venv") == "0.1.0"
    for planned in (
        "[dry run] useradd --system --user-group --home-dir /var/lib/kit",
        "[dry run] chown -R kit:kit",
        f"[dry run] chown root:kit {config}",
        "[dry run] systemctl enable kit-agent.service kit-kiosk.service",
        "[dry run] systemctl reload-or-restart kit-agent.service",
        "[dry run] systemctl restart kit-kiosk.service",
    ):
        assert planned in log or planned.replace("useradd", "usermod") in log, log

    first = snapshot(root)
    log = install(tree, "install-kit.sh", root, url, code, "Salle 12")
    assert snapshot(root) == first, "a second run changed the installed tree"
    assert "already enrolled" in log and "already installed" in log
    assert "[dry run] systemctl start kit-agent.service" in log
    assert "[dry run] systemctl start kit-kiosk.service" in log
    assert "restart" not in log  # nothing changed: nothing restarts

    # An admin edits the configuration; a new version is installed without a code.
    config.write_text(config.read_text(encoding="utf-8") + "# edited by the admin\n")
    config.chmod(0o644)  # as an older install-kit.sh wrote it
    edited, enrolled = config.read_bytes(), credential.read_bytes()
    newer = source_tree(tmp_path / "src-0.1.1", version="0.1.1")
    log = install(newer, "install-kit.sh", root)
    assert installed_version(root / "opt/kit/venv") == "0.1.1", log
    assert config.read_bytes() == edited
    assert stat.S_IMODE(config.stat().st_mode) == 0o640, "readable by others no more"
    assert credential.read_bytes() == enrolled
    # The agent is asked to restart when no class is live (tests/agent/test_reload.py); the
    # kiosk, unchanged, is left alone (its page reloads when it sees the new version).
    assert "[dry run] systemctl reload-or-restart kit-agent.service" in log
    assert "[dry run] systemctl start kit-kiosk.service" in log
    assert "systemctl restart" not in log


def test_kit_install_without_a_code_refuses_to_guess(tmp_path: Path) -> None:
    tree = source_tree(tmp_path / "src")
    env = {**os.environ, "ROOT": str(tmp_path / "root"), "KIT_PYTHON": sys.executable}
    env["KIT_PIP_OPTS"] = "--no-deps"
    result = subprocess.run(
        ["sh", str(tree / "systemd/install-kit.sh")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "ENROLLMENT_CODE" in result.stderr


def test_server_install_is_idempotent_and_keeps_its_options(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tree = source_tree(tmp_path / "src")
    log = install(tree, "install-server.sh", root, "https://provisioning.example.fr")
    assert "[dry run] systemctl restart kit-provisioning.service" in log
    options = root / "etc/kit-provisioning/provisioning.env"
    assert "--public-url https://provisioning.example.fr" in options.read_text(encoding="utf-8")
    assert (root / "etc/systemd/system/kit-provisioning.service").exists()
    assert installed_version(root / "opt/kit-provisioning/venv") == "0.1.0"
    first = snapshot(root)
    install(tree, "install-server.sh", root, "https://elsewhere.example.fr")
    assert snapshot(root) == first  # the options written the first time are kept


def test_server_install_with_turn_shares_a_secret_with_coturn(tmp_path: Path) -> None:
    """``--turn`` on an installed server: coturn's configuration is the template the NAT tests
    run (tests/nat.py), with the server's secret; the admin's options are kept, the TURN ones
    added once; a second run changes nothing and restarts nothing."""
    root = tmp_path / "root"
    tree = source_tree(tmp_path / "src")
    install(tree, "install-server.sh", root, "https://provisioning.example.fr:8443/")
    options = root / "etc/kit-provisioning/provisioning.env"
    options.write_text(options.read_text(encoding="utf-8") + "# edited by the admin\n")
    log = install(tree, "install-server.sh", root, "--turn")

    secret_file = root / "etc/kit-provisioning/turn-secret"
    secret = read_secret_file(secret_file)  # 0600, one line, long enough
    assert len(secret) == 64 and (secret_file.stat().st_mode & 0o777) == 0o600
    config = root / "etc/coturn/turnserver.conf"
    assert config.read_text(encoding="utf-8") == render_turn_config(
        secret,
        "provisioning.example.fr",
        Path("/etc/coturn/self-signed-cert.pem"),
        Path("/etc/coturn/self-signed-key.pem"),
    )
    assert (config.stat().st_mode & 0o777) == 0o640
    assert (root / "etc/coturn/self-signed-key.pem").stat().st_mode & 0o777 == 0o640
    assert (root / "etc/systemd/system/coturn.service.d/kit-provisioning.conf").read_bytes() == (
        REPO / "systemd/coturn-kit.conf"
    ).read_bytes()
    text = options.read_text(encoding="utf-8")
    assert "# edited by the admin\n" in text and "--public-url https://provisioning" in text
    [line] = [line for line in text.splitlines() if line.startswith("KIT_PROVISIONING_TURN_ARGS=")]
    words = line.removeprefix("KIT_PROVISIONING_TURN_ARGS=").strip('"').split()
    assert words[:2] == ["--turn-secret-file", "/etc/kit-provisioning/turn-secret"]
    urls = [parse_turn_url(url) for flag, url in zip(words[2::2], words[3::2], strict=True)]
    assert [url.kind for url in urls] == ["turn-udp", "turn-tcp", "turn-tls"]
    assert {url.host for url in urls} == {"provisioning.example.fr"}
    for planned in (
        f"[dry run] chown kit-provisioning:kit-provisioning {secret_file}",
        f"[dry run] chown root:turnserver {config}",
        "[dry run] systemctl enable coturn.service",
        "[dry run] systemctl restart coturn.service",
        "[dry run] systemctl restart kit-provisioning.service",  # new options
    ):
        assert planned in log, log

    first = snapshot(root)
    log = install(tree, "install-server.sh", root, "--turn")
    assert snapshot(root) == first, "a second run changed the installed tree"
    assert "[dry run] systemctl start coturn.service" in log
    assert "systemctl restart" not in log


def test_turn_install_refuses_a_host_it_cannot_use(tmp_path: Path) -> None:
    tree = source_tree(tmp_path / "src")
    env = {**os.environ, "ROOT": str(tmp_path / "root"), "KIT_PYTHON": sys.executable}
    env |= {"KIT_PIP_OPTS": "--no-deps", "KIT_TURN_HOST": "turn.example.fr;reboot"}
    result = subprocess.run(
        ["sh", str(tree / "systemd/install-server.sh"), "--turn", "https://p.example.fr"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "no usable TURN host name" in result.stderr
    assert not (tmp_path / "root/etc/coturn/turnserver.conf").exists()


def test_server_install_as_a_cluster_node_behind_haproxy(tmp_path: Path) -> None:
    """``--node`` and ``--lb-node``: the node's options added once with a shared secret made
    once; HAProxy's configuration is the template the HAProxy test runs (tests/haproxy.py),
    accepted by ``haproxy -c`` with a real certificate, read through the drop-in, reloaded (not
    restarted: the kits' links stay up) when the nodes change; a second run changes nothing."""
    root = tmp_path / "root"
    tree = source_tree(tmp_path / "src")
    cert = make_haproxy_cert(tmp_path)
    nodes = ["10.0.0.2:8443", "10.0.0.3:8443"]
    lb = [word for node in nodes for word in ("--lb-node", node)]
    node = ["--node", "http://10.0.0.2:8443", "--db", "postgresql://kit:pw@10.0.0.5/kit"]
    args = [*node, "--proxy", "10.0.0.1", *lb, "--lb-cert", str(cert)]
    log = install(tree, "install-server.sh", root, *args, "https://fleet.example.fr")

    secret_file = root / "etc/kit-provisioning/cluster-secret"
    assert len(read_secret_file(secret_file)) == 64
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    text = (root / "etc/kit-provisioning/provisioning.env").read_text(encoding="utf-8")
    [line] = [line for line in text.splitlines() if line.startswith("KIT_PROVISIONING_CLUSTER")]
    words = line.split("=", 1)[1].strip('"').split()
    options = dict(zip(words[::2], words[1::2], strict=True))
    assert options == {
        "--node-id": f"{os.uname().nodename}-8443",
        "--node-url": "http://10.0.0.2:8443",
        "--cluster-secret-file": "/etc/kit-provisioning/cluster-secret",
        "--trusted-proxy": "10.0.0.1",
        "--db": "postgresql://kit:pw@10.0.0.5/kit",
    }
    unit = (root / "etc/systemd/system/kit-provisioning.service").read_text(encoding="utf-8")
    assert "$KIT_PROVISIONING_CLUSTER_ARGS" in unit

    config = root / "etc/haproxy/kit-provisioning.cfg"
    assert config.read_text(encoding="utf-8") == render_haproxy_config(nodes, str(cert))
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    checked = check_config(config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "WARNING" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    dropin = root / "etc/systemd/system/haproxy.service.d/kit-provisioning.conf"
    assert dropin.read_bytes() == (REPO / "systemd/haproxy-kit.conf").read_bytes()
    assert "Environment=CONFIG=/etc/haproxy/kit-provisioning.cfg" in dropin.read_text("utf-8")
    sysctl = root / "etc/sysctl.d/60-kit-haproxy.conf"
    assert "net.ipv4.ip_local_port_range = 10000 65535" in sysctl.read_text(encoding="utf-8")
    for planned in (
        f"[dry run] chown kit-provisioning:kit-provisioning {secret_file}",
        f"[dry run] chown root:haproxy {config}",
        "[dry run] sysctl -q -p /etc/sysctl.d/60-kit-haproxy.conf",
        "[dry run] systemctl enable haproxy.service",
        "[dry run] systemctl restart haproxy.service",
        "[dry run] systemctl restart kit-provisioning.service",
    ):
        assert planned in log, log

    first = snapshot(root)
    log = install(tree, "install-server.sh", root, *args)
    assert snapshot(root) == first, "a second run changed the installed tree"
    assert "systemctl restart" not in log and "reload-or-restart" not in log, log
    assert "[dry run] systemctl start haproxy.service" in log

    # A third node: HAProxy reloads (its old process keeps the links), the server is untouched.
    log = install(tree, "install-server.sh", root, *args, "--lb-node", "10.0.0.4:8443")
    assert "    server node3 10.0.0.4:8443\n" in config.read_text(encoding="utf-8")
    assert "[dry run] systemctl reload-or-restart haproxy.service" in log, log
    assert "systemctl restart" not in log, log


def test_load_balancer_only_and_bad_options(tmp_path: Path) -> None:
    """``--lb-only`` installs HAProxy alone (no server, no virtualenv, plain HTTP without a
    certificate); a node that is not HOST:PORT, a relative certificate path or a node without a
    PostgreSQL URL are refused before anything is written."""
    root = tmp_path / "root"
    tree = source_tree(tmp_path / "src")
    install(tree, "install-server.sh", root, "--lb-only", "--lb-node", "[2001:db8::2]:8443")
    config = (root / "etc/haproxy/kit-provisioning.cfg").read_text(encoding="utf-8")
    assert config == render_haproxy_config(["[2001:db8::2]:8443"])
    binds = [line.split() for line in config.splitlines() if line.startswith("    bind ")]
    assert binds == [["bind", ":80"]]
    assert "backend acme" not in config and "http-request redirect" not in config
    assert not (root / "opt").exists() and not (root / "etc/kit-provisioning").exists()

    env = {**os.environ, "ROOT": str(tmp_path / "bad"), "KIT_PYTHON": sys.executable}
    for args, message in (
        (["--lb-node", "10.0.0.2"], "HOST:PORT expected"),
        (["--lb-node", "10.0.0.2:84;43"], "HOST:PORT expected"),
        (["--lb-node", "10.0.0.2:8443", "--lb-cert", "fleet.pem"], "absolute path"),
        (["--node", "http://10.0.0.2:8443", "https://p.example.fr"], "give --db postgresql"),
        (["--node", "10.0.0.2:8443", "https://p.example.fr"], "http://HOST:PORT expected"),
        (["--db", "postgresql://kit:p w@db/kit", "https://p.example.fr"], "no spaces"),
        (["--lb-only"], "give the nodes"),
        (["--lb-node"], "--lb-node needs a value"),
    ):
        result = subprocess.run(
            ["sh", str(tree / "systemd/install-server.sh"), *args],
            env={**env, "KIT_PIP_OPTS": "--no-deps"}, capture_output=True, text=True,
            timeout=600, check=False,
        )  # fmt: skip
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert not (tmp_path / "bad/etc/haproxy").exists()
