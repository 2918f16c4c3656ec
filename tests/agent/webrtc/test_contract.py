"""The aiortc/aioice contract (agent/webrtc/contract.py): the installed versions hold it, every
private name the agent touches is declared in it, and a changed aiortc is refused at start-up,
by the check and by a real ``python -m agent run``."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from aiortc.rtcrtpsender import RTCRtpSender

from agent.webrtc import contract
from agent.webrtc.contract import CONTRACT, SUPPORTED, Kind, check, refusal

ROOT = Path(__file__).resolve().parents[3]
WEBRTC = ROOT / "agent" / "webrtc"


def test_the_installed_aiortc_and_aioice_hold_the_contract() -> None:
    assert check() == []
    assert refusal() is None


def test_a_method_turned_into_a_property_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RTCRtpSender, "_run_rtp", property(lambda self: None))
    message = refusal()
    assert message is not None
    assert (
        "aiortc.rtcrtpsender.RTCRtpSender._run_rtp: expected coroutine method, found property"
        in message
    )
    assert "supported: aiortc 1.16.x, aioice 0.13.x" in message
    assert "installed: aiortc 1." in message
    assert len(check()) == 1


def test_a_coroutine_method_turned_plain_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RTCRtpSender, "_retransmit", lambda self, sequence_number: None)
    [breach] = check()
    assert str(breach.name) == "aiortc.rtcrtpsender.RTCRtpSender._retransmit"
    assert (breach.name.kind, breach.found) == (Kind.COROUTINE_METHOD, Kind.METHOD)


def test_a_replaced_method_aiortc_no_longer_calls_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replacing ``_run_rtp`` is pointless if ``send`` starts another loop: refused too."""

    async def send(self: RTCRtpSender, parameters: object) -> None:
        await self._run_rtp_loop(parameters)  # type: ignore[attr-defined]

    monkeypatch.setattr(RTCRtpSender, "send", send)
    [breach] = check()
    assert str(breach) == (
        "aiortc.rtcrtpsender.RTCRtpSender.send: expected coroutine method using _run_rtp, "
        "found coroutine method that no longer uses _run_rtp (used by rtpsend)"
    )


def test_an_absent_method_or_function_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import aioice.ice

    monkeypatch.delattr(RTCRtpSender, "_send_keyframe")
    monkeypatch.delattr(aioice.ice, "get_host_addresses")
    found = {str(b.name): b.found for b in check()}
    assert found == {
        "aiortc.rtcrtpsender.RTCRtpSender._send_keyframe": "nothing",
        "aioice.ice.get_host_addresses": "nothing",
    }


def test_an_instance_attribute_renamed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiortc renaming a private field (here ``__octet_count``) shows only on an instance."""
    original = RTCRtpSender.__init__

    def init(self: RTCRtpSender, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        vars(self)["_RTCRtpSender__bytes_sent"] = vars(self).pop("_RTCRtpSender__octet_count")

    monkeypatch.setattr(RTCRtpSender, "__init__", init)
    message = refusal()
    assert message is not None
    assert (
        "aiortc.rtcrtpsender.RTCRtpSender()._RTCRtpSender__octet_count: "
        "expected instance attribute, found nothing (used by rtpsend)"
    ) in message


def test_an_instance_attribute_turned_into_a_property_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def set_ssrc(self: RTCRtpSender, value: int) -> None:
        vars(self)["ssrc_value"] = value

    ssrc = property(lambda self: vars(self)["ssrc_value"], set_ssrc)
    monkeypatch.setattr(RTCRtpSender, "_ssrc", ssrc, raising=False)
    [breach] = check()
    assert str(breach) == (
        "aiortc.rtcrtpsender.RTCRtpSender()._ssrc: expected instance attribute, found property "
        "(used by rtpsend)"
    )


def test_a_class_that_cannot_be_built_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import aioice.ice

    def init(self: object, receiver: object, transport: object) -> None:
        raise TypeError("a new signature")

    monkeypatch.setattr(aioice.ice.StunProtocol, "__init__", init)
    message = refusal()
    assert message is not None
    assert "no sample (aioice.ice.StunProtocol() failed: TypeError" in message
    assert "cannot check transport" in message


def test_a_module_that_no_longer_imports_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiortc.clock", None)  # import raises ImportError
    [breach] = check()
    assert str(breach.name) == "aiortc.clock.current_ntp_time"


def test_the_supported_versions_are_the_pinned_ones() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = [project["dependencies"], *project["optional-dependencies"].values()]
    pins = [pin for group in groups for pin in group]
    for package, minor in SUPPORTED.items():
        major, low = minor.split(".")
        assert f"{package}>={minor},<{major}.{int(low) + 1}" in pins


def _private_names_touched() -> set[str]:
    """Private attributes the webrtc modules read or write on objects other than their own
    (``x._name`` with ``x`` not ``self``/``cls``, ``getattr(x, "_name")``, ``_get("name")``)."""
    touched: set[str] = set()
    for path in WEBRTC.glob("*.py"):
        if path.name == "contract.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                owner = node.value
                own = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                if not own and not node.attr.startswith("__") and not _is_own_field(owner):
                    touched.add(node.attr)
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                args = node.args
                if name == "getattr" and len(args) > 1 and isinstance(args[1], ast.Constant):
                    if str(args[1].value).startswith("_"):
                        touched.add(str(args[1].value))
                elif name in ("_get", "_set") and isinstance(args[0], ast.Constant):
                    touched.add(f"_RTCRtpSender__{args[0].value}")
    return touched


def _is_own_field(owner: ast.expr) -> bool:
    """``self._x._y`` where ``self._x`` is one of ours, not an aiortc object."""
    return (
        isinstance(owner, ast.Attribute)
        and isinstance(owner.value, ast.Name)
        and owner.value.id == "self"
        and owner.attr not in ("_sender",)
    )


def test_every_private_name_the_agent_touches_is_declared() -> None:
    declared = {name.path.rsplit(".", 1)[-1] for name in CONTRACT}
    touched = _private_names_touched()
    assert {"_run_rtp", "_nominated", "_tx_srtp", "_ssrc", "_sock", "_send_rtp"} <= touched
    assert touched - declared == set()


CHANGES = {
    "a method turned into a property": (
        "import aiortc.rtcrtpsender\n"
        "aiortc.rtcrtpsender.RTCRtpSender._run_rtp = property(lambda self: None)\n",
        "RTCRtpSender._run_rtp: expected coroutine method, found property",
    ),
    "a function removed": (
        "import aiortc.rtcicetransport\ndel aiortc.rtcicetransport.parse_stun_turn_uri\n",
        "aiortc.rtcicetransport.parse_stun_turn_uri: expected function, found nothing",
    ),
}


@pytest.mark.parametrize("command", [["run", "--config", "{config}"], ["demo"]])
@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_the_agent_refuses_to_start_on_a_changed_aiortc(
    tmp_path: Path, command: list[str], change: tuple[str, str]
) -> None:
    """A real ``python -m agent`` whose aiortc was changed before the agent imported it (a
    sitecustomize on its path): it exits at once, status 3, naming the name and the versions
    (no ImportError on the way: the agent imports aiortc's modules, not names from them)."""
    patch, expected = change
    (tmp_path / "sitecustomize.py").write_text(patch)
    config = tmp_path / "agent.toml"
    config.write_text('[http]\nlisten = "127.0.0.1:0"\n')
    args = [arg.format(config=config) for arg in command]
    result = subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=ROOT,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "kiosk:" not in result.stdout
    assert expected in result.stderr
    assert f"supported: {contract.supported_versions()}" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_check_takes_little_time() -> None:
    """Once at start-up, never per packet; building the samples costs a few milliseconds."""
    import time

    started = time.perf_counter()
    check()
    assert time.perf_counter() - started < 1.0
