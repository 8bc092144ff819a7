"""A client that stops reading is dropped (1008 "slow consumer"); the others carry on."""

from __future__ import annotations

from moltbot.gateway.ws import HUB_KEY, WsOptions
from tests.conftest import make_config
from tests.fake_upstreams import FakeOpenAI, provider_config
from tests.gateway.ws.wsutil import collect_until, is_chat_end, wait_for

MAX_BUFFERED = 16 * 1024
# Agent events must all arrive (each carries only its new text): three runs of 1,500 chunks of
# 2,000 characters make ~9 MB for a follower, beyond what the kernel's socket buffers (a few MB
# on loopback) absorb before the gateway's own queue has to grow.
CHUNK = "x" * 1999 + " "
CHUNKS = 1500
RUNS = 3
# A pause between chunks lets the gateway's writer hand each event to the transport; with no
# pause a burst of events would mostly be dropped (as droppable) before reaching the socket.
CHUNK_DELAY = 0.001


async def test_a_client_that_does_not_read_is_dropped(
    state_dir, start_ws, open_client, open_probe, up: FakeOpenAI
):
    config = make_config(state_dir, providers=(provider_config(up),), primary="up/m1")
    gateway = await start_ws(config, WsOptions(max_buffered_bytes=MAX_BUFFERED))
    hub = gateway.app[HUB_KEY]
    # After the hub has queued each event: how much the fullest socket holds.
    peaks: list[int] = []
    gateway.runtime.bus.subscribe(
        lambda _: peaks.append(max((c.buffered for c in hub.connections), default=0))
    )
    for _ in range(RUNS):
        up.stream([CHUNK] * CHUNKS, delay=CHUNK_DELAY)

    slow = await open_probe(gateway)
    assert (await slow.hello())["ok"]
    for run in range(RUNS):  # one session per run: a history this long would not be sent
        assert (await slow.request("agent.follow", {"sessionKey": f"s{run}"}))["ok"]
    # From here on the slow client reads nothing: every agent event of the run piles up.

    reader = await open_client(gateway)
    for run in range(RUNS):
        run_id = f"big-run-{run}"
        params = {"sessionKey": f"s{run}", "message": "go", "idempotencyKey": run_id}
        started = await reader.request("chat.send", params)
        assert started == {"runId": run_id, "status": "started"}
        events = await collect_until(reader, is_chat_end(run_id), timeout=30)
        final = events[-1].payload
        assert final["state"] == "final", final.get("errorMessage")
        # The reply is longer than one frame may be: the final carries its start, marked.
        shown = final["message"]["content"][0]["text"]
        assert final["message"]["truncated"] is True
        assert 0 < len(shown) < len(CHUNK) * CHUNKS and (CHUNK * CHUNKS).startswith(shown)

    # The slow socket was closed by the server, the reader is still connected and usable.
    await wait_for(lambda: len(hub.connections) == 1)
    assert (await reader.request("health"))["ok"] is True
    code, reason = await slow.closed(timeout=30)
    assert (code, reason) == (1008, "slow consumer")
    # The backlog never grew past the limit plus the one frame that crossed it.
    largest_frame = 512 * 1024  # a frame is never larger than maxPayload
    assert max(peaks) <= MAX_BUFFERED + largest_frame
