"""``GET /api/status`` carries the kit's own problems; ``GET /healthz`` answers anyone."""

from __future__ import annotations

import aiohttp

from agent.problems import Problems


async def test_problems_in_status(kit_with_problems: tuple[str, Problems]) -> None:
    base, problems = kit_with_problems
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/api/status") as response:
            assert (await response.json())["problems"] == []
        problems.report("config_unreadable", "/etc/kit/agent.toml: bad", fallback="defaults")
        problems.report("disk_full", "/var/lib/kit: no space")
        async with http.get(base + "/api/status") as response:
            body = await response.json()
        assert [p["code"] for p in body["problems"]] == ["config_unreadable", "disk_full"]
        assert body["problems"][0]["fallback"] == "defaults"
        problems.clear("disk_full")
        async with http.get(base + "/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"ok": True}
        async with http.post(base + "/api/session/stop") as response:
            assert [p["code"] for p in (await response.json())["problems"]] == ["config_unreadable"]
