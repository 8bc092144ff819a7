"""After the handshake: malformed input, size limits, ticks, seq, and the graceful stop."""

from __future__ import annotations

import asyncio

from moltbot.gateway.ws import HUB_KEY, WsOptions
from tests.conftest import make_config
from tests.gateway.ws.wsutil import WAIT


async def test_malformed_frames_are_answered_and_the_socket_survives(
    state_dir, start_ws, open_probe
):
    gateway = await start_ws(make_config(state_dir))
    probe = await open_probe(gateway)
    assert (await probe.hello())["ok"]

    # Not JSON (nor JSON nested past the parser's depth, nor UTF-8): no id can be read, so the
    # answer comes under the id "invalid"; the socket stays open for the next request.
    garbage = {
        "{not json": "invalid request frame: not JSON (Expecting property name enclosed in "
        "double quotes at char 1)",
        "[" * 100_000: "invalid request frame: JSON nested too deeply",
        b'{"id": "\xff"}': "invalid request frame: not UTF-8",
    }
    for frame, message in garbage.items():
        if isinstance(frame, bytes):
            await probe.ws.send_bytes(frame)
        else:
            await probe.send(frame)
        res = await probe.frame()
        assert res == {
            "type": "res",
            "id": "invalid",
            "ok": False,
            "error": {"code": "INVALID_REQUEST", "message": message},
        }
        await probe.send({"type": "req", "id": "after-garbage", "method": "health"})
        res = await probe.frame()
        assert (res["type"], res["id"], res["ok"]) == ("res", "after-garbage", True)

    await probe.send("[1, 2]")
    res = await probe.frame()
    assert res["id"] == "invalid" and res["ok"] is False
    assert res["error"] == {
        "code": "INVALID_REQUEST",
        "message": "invalid request frame: at root: must be object",
    }

    await probe.send({"type": "event", "id": "e1", "event": "x"})
    res = await probe.frame()
    assert res["id"] == "e1"
    assert "unexpected property 'event'" in res["error"]["message"]
    assert 'at /type: must be equal to constant "req"' in res["error"]["message"]

    await probe.send({"type": "req", "id": "r1", "method": "health", "extra": 1})
    res = await probe.frame()
    assert res["id"] == "r1"
    assert res["error"]["message"] == "invalid request frame: at root: unexpected property 'extra'"

    await probe.send({"type": "req", "id": 7, "method": "health"})
    res = await probe.frame()
    assert res["id"] == "invalid" and "at /id: must be string" in res["error"]["message"]

    res = await probe.request("no.such.method")
    assert res["error"] == {"code": "INVALID_REQUEST", "message": "unknown method: no.such.method"}
    res = await probe.request("connect", {})
    assert res["error"]["message"] == "connect is only valid as the first request"

    # Still the same healthy connection.
    assert (await probe.request("health"))["payload"]["ok"] is True
    assert len(gateway.app[HUB_KEY].connections) == 1


async def test_frames_above_max_payload_close_with_1009(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir), WsOptions(max_payload=2048))
    probe = await open_probe(gateway)
    assert (await probe.hello())["ok"]
    await probe.send({"type": "req", "id": "big", "method": "health", "params": "x" * 4096})
    assert (await probe.closed())[0] == 1009


async def test_ticks_arrive_with_per_socket_seq_without_gaps(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir), WsOptions(tick_interval=0.02))
    probe = await open_probe(gateway)
    hello = await probe.hello()
    assert hello["payload"]["policy"]["tickIntervalMs"] == 20
    ticks = [await probe.event(lambda e: e["event"] == "tick") for _ in range(3)]
    assert all(isinstance(t["payload"]["ts"], int) for t in ticks)
    seqs = [t["seq"] for t in ticks]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    # Another socket counts its own events from 1.
    other = await open_probe(gateway)
    await other.hello()
    first = await other.event(lambda e: e["event"] == "tick")
    assert first["seq"] == 1


async def test_graceful_stop_says_shutdown_then_closes_with_1012(state_dir, start_ws, open_probe):
    gateway = await start_ws(make_config(state_dir))
    probes = [await open_probe(gateway) for _ in range(2)]
    for probe in probes:
        assert (await probe.hello())["ok"]
    stopping = asyncio.create_task(gateway.stop())
    for probe in probes:
        event = await probe.event(lambda e: e["event"] == "shutdown")
        assert event["payload"] == {"reason": "gateway stopping"}  # no restartExpectedMs
        assert await probe.closed() == (1012, "service restart")
    async with asyncio.timeout(WAIT):
        await stopping
