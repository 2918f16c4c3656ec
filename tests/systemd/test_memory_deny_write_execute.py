"""``MemoryDenyWriteExecute=``: what our processes do with writable+executable memory.

systemd enforces the setting with a seccomp filter that refuses writable+executable mappings
(and making a mapping executable later). Linux >= 6.3 has the same rule as
``prctl(PR_SET_MDWE)``, which a test can set on a subprocess without systemd. Measured:

* the provisioning server runs under it (argon2 hashing, SQLite, HTTP): the unit sets it;
* the agent's media stack (numpy, OpenCV, PyAV/libx264) runs under it, but WebRTC does not:
  aiortc's DTLS sets a certificate-verify callback through pyOpenSSL, and cffi callbacks need
  W+X memory. So kit-agent.service keeps ``MemoryDenyWriteExecute=no``; if this test starts
  failing because the callback is accepted, the agent's unit can turn it on.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[2]
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
LOOPBACK = "127.0.0.1"

PRELUDE = f"""
import ctypes, mmap, runpy, sys
if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0):
    sys.exit("prctl(PR_SET_MDWE) failed")
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError:
    pass
else:
    sys.exit("W+X memory was allowed: the rule is not enforced")
"""
"""Enforce W^X on this process, and make sure it is enforced."""

RUN_MODULE = PRELUDE + "sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__')"
"""``python -c RUN_MODULE module args…``: ``python -m module args…`` with W^X enforced."""


def mdwe_supported() -> bool:
    code = f"import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl({PR_SET_MDWE}, 1, 0, 0, 0))"
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


pytestmark = pytest.mark.skipif(not mdwe_supported(), reason="needs Linux >= 6.3 (PR_SET_MDWE)")


def run_code(code: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + code],
        cwd=REPO, input=stdin, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_media_stack_runs_under_it() -> None:
    code = """
import av, cv2, numpy
frame = cv2.resize(numpy.zeros((480, 640, 3), numpy.uint8), (320, 240))
codec = av.CodecContext.create("libx264", "w")
codec.width, codec.height, codec.pix_fmt = 320, 240, "yuv420p"
codec.options = {"preset": "ultrafast", "tune": "zerolatency"}
packets = []
for i in range(10):
    frame[:] = i * 20
    packets += codec.encode(av.VideoFrame.from_ndarray(frame, format="bgr24"))
packets += codec.encode(None)
print(len(packets), "packets")
"""
    result = run_code(code)
    assert result.stdout.strip() == "10 packets", result.stdout + result.stderr


def test_webrtc_dtls_does_not_so_the_agent_unit_leaves_it_off() -> None:
    code = """
from OpenSSL import SSL
context = SSL.Context(SSL.DTLS_METHOD)
try:
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *a: True)
except MemoryError:
    print("callback refused")
"""
    result = run_code(code)
    assert result.stdout.strip() == "callback refused", result.stdout + result.stderr
    unit = (REPO / "systemd/kit-agent.service").read_text(encoding="utf-8")
    assert "\nMemoryDenyWriteExecute=no\n" in unit
    assert "\nMemoryDenyWriteExecute=yes\n" in (
        REPO / "systemd/kit-provisioning.service"
    ).read_text(encoding="utf-8")


@pytest.mark.slow
async def test_the_provisioning_server_runs_under_it(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    added = run_code(
        "sys.argv = ['kit-provisioning', 'user', 'add', 'admin@example.fr', '--role', 'national',"
        f" *{data!r}]\nfrom provisioning.cli import main\nsys.exit(main())",
        stdin="correct horse battery staple\n",
    )
    assert added.returncode == 0, added.stdout + added.stderr
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUN_MODULE, "provisioning.cli", "serve",
        "--http", f"{LOOPBACK}:0", *data,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            line = (await process.stdout.readline()).decode()
        port = int(line.split()[1].removesuffix("/admin/").rsplit(":", 1)[1])
        async with aiohttp.ClientSession() as http:
            login = {"email": "admin@example.fr", "password": "correct horse battery staple"}
            async with http.post(f"http://{LOOPBACK}:{port}/api/v1/login", json=login) as answer:
                assert answer.status == 200, await answer.text()
    finally:
        process.terminate()
        await process.wait()
