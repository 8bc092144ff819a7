"""The Responses stream on the wire, read with raw aiohttp: event names and order, sequence
numbers, indices and ids, keep-alives, failures mid-stream, and a slow reader holding the run
back."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from moltbot.agents.run import EVENT_OVERHEAD_BYTES, RUN_BUFFER_BYTES
from moltbot.gateway.http.responses_output import ResponseBuilder
from moltbot.gateway.http.sse import KEEPALIVE_KEY, STALL_KEY
from moltbot.gateway.server import build_app, make_runner
from tests.conftest import TOKEN, Gateway, ServeApp, StartGateway
from tests.fake_upstreams import FakeCall, FakeOpenAI, FakeUsage
from tests.gateway.http.helpers import WAIT, next_event, request
from tests.gateway.http.responses_helpers import (
    RESPONSES_PATH,
    event_types,
    named_events,
    post_responses,
    responses_config,
)

DELTAS = ["Hel", "lo", ", wor", "ld!"]
TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}


async def test_a_text_stream_exactly(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    up.stream(DELTAS, usage=FakeUsage(9, 4, cache_read_tokens=1))
    reply = await post_responses(gateway, {"model": "moltbot", "input": "hi", "stream": True})
    assert reply.status == 200
    assert reply.headers["Content-Type"].split(";")[0] == "text/event-stream"
    assert reply.headers["Cache-Control"] == "no-cache"
    events = named_events(reply.body)
    assert event_types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(DELTAS),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    created, in_progress, added, part_added, *deltas = events[:-4]
    text_done, part_done, item_done, completed = events[-4:]
    response_id = created["response"]["id"]
    for lifecycle in (created, in_progress):
        snapshot = lifecycle["response"]
        assert snapshot["id"] == response_id and snapshot["object"] == "response"
        assert (snapshot["status"], snapshot["output"], snapshot["usage"]) == (
            "in_progress",
            [],
            None,
        )
    item_id = added["item"]["id"]
    assert item_id.startswith("msg_")
    assert added["output_index"] == 0
    assert added["item"] == {
        "id": item_id,
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    assert part_added == {
        "type": "response.content_part.added",
        "sequence_number": 3,
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "part": part,
    }
    for delta, text in zip(deltas, DELTAS, strict=True):
        assert (delta["item_id"], delta["output_index"], delta["content_index"]) == (item_id, 0, 0)
        assert delta["delta"] == text
    whole = {**part, "text": "Hello, world!"}
    assert (text_done["text"], text_done["item_id"], text_done["content_index"]) == (
        "Hello, world!",
        item_id,
        0,
    )
    assert part_done["part"] == whole
    assert item_done["item"] == {**added["item"], "status": "completed", "content": [whole]}
    final = completed["response"]
    assert final["id"] == response_id and final["status"] == "completed"
    assert final["output"] == [item_done["item"]]
    assert final["usage"]["input_tokens"] == 10 and final["usage"]["output_tokens"] == 4
    assert final["error"] is None


async def test_text_then_tool_calls_on_the_wire(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    calls = [
        FakeCall("call_a", "lookup", '{"q": "alpha"}'),
        FakeCall("call_b", "lookup", '{"q": "beta"}'),
    ]
    up.tool_calls(calls, text="Looking up.", fragment_chars=5)  # 3 fragments each
    body = {"input": "find", "stream": True, "tools": [TOOL]}
    events = named_events((await post_responses(gateway, body)).body)
    types = event_types(events)
    message_events = types[2 : types.index("response.output_item.done") + 1]
    assert message_events[:2] == ["response.output_item.added", "response.content_part.added"]
    call_events = types[len(message_events) + 2 : -1]
    one_call = [
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * 3,
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert call_events == one_call * 2
    assert types[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added] == [0, 1, 2]
    for index, call_id, query in ((1, "call_a", "alpha"), (2, "call_b", "beta")):
        item = added[index]["item"]
        assert item["type"] == "function_call" and item["id"].startswith("fc_")
        assert (item["call_id"], item["name"], item["arguments"]) == (call_id, "lookup", "")
        mine = [e for e in events if e.get("output_index") == index]
        deltas = [e for e in mine if e["type"] == "response.function_call_arguments.delta"]
        assert all(e["item_id"] == item["id"] for e in mine if "item_id" in e)
        arguments = json.dumps({"q": query})
        assert "".join(e["delta"] for e in deltas) == arguments
        [done] = [e for e in mine if e["type"] == "response.function_call_arguments.done"]
        assert done["arguments"] == arguments
        [item_done] = [e for e in mine if e["type"] == "response.output_item.done"]
        assert item_done["item"] == {**item, "status": "completed", "arguments": arguments}
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call", "function_call"]
    assert final["output"][1]["call_id"] == "call_a"


async def test_a_non_streamed_response_is_one_json_object(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    up.stream(DELTAS)
    reply = await post_responses(gateway, {"input": "hi"})
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["output"][0]["content"][0]["text"] == "Hello, world!"
    assert body["previous_response_id"] is None and body["store"] is True
    retrieved = await _get(gateway, body["id"])
    assert retrieved.status == 200 and retrieved.json() == body


async def _get(gateway: Gateway, response_id: str) -> Any:
    return await request(gateway, "GET", f"{RESPONSES_PATH}/{response_id}")


async def test_keepalive_comments_open_the_stream_while_the_model_thinks(
    serve_app: ServeApp, state_dir: Path, up: FakeOpenAI
) -> None:
    config = responses_config(state_dir, up)
    app = build_app(config)
    app[KEEPALIVE_KEY] = 0.05
    gateway = await serve_app(app, config)
    up.hang()  # never answers
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        body = {"input": "x", "stream": True}
        async with http.post(
            gateway.url + RESPONSES_PATH, json=body, headers=gateway.headers()
        ) as r:
            assert r.status == 200
            assert (await next_event(r)).startswith("event: response.created\n")
            assert (await next_event(r)).startswith("event: response.in_progress\n")
            assert await next_event(r) == ": keep-alive"
            assert await next_event(r) == ": keep-alive"
    await up.wait_disconnect(timeout=1.0)


@pytest.mark.parametrize("failure", ["reset", "malformed", "error_frame"])
async def test_a_failure_mid_stream_is_response_failed(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, failure: str
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    if failure == "reset":
        up.reset_after(2)
    elif failure == "malformed":
        up.malformed(after_chunks=2)
    else:
        up.error_frame("overloaded", after_chunks=2)
    reply = await post_responses(gateway, {"input": "alpha beta gamma", "stream": True})
    assert reply.status == 200
    events = named_events(reply.body)
    assert event_types(events)[-1] == "response.failed"
    assert "response.completed" not in event_types(events)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error" and failed["error"]["message"]
    [message] = failed["output"]
    assert message["status"] == "incomplete"
    assert message["content"][0]["text"] == "alpha beta"
    assert len(up.requests) == 1  # text was already out: nothing is retried
    # The failed response can be read back; the next request is served as usual.
    assert (await _get(gateway, failed["id"])).json()["status"] == "failed"
    assert (await post_responses(gateway, {"input": "and now?"})).status == 200


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_failure_before_any_output_is_an_http_error(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, stream: bool
) -> None:
    gateway = await start_gateway(responses_config(state_dir, up))
    for _ in range(3):  # the first attempt and two retries (FAST_RETRIES)
        up.status(500)
    reply = await post_responses(gateway, {"input": "x", "stream": stream})
    assert reply.status == 502
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.error["type"] == "upstream_error" and reply.error["code"] == "upstream"
    assert "fake error 500" in reply.error["message"]


async def test_an_internal_error_mid_stream_is_an_error_event(
    start_gateway: StartGateway,
    state_dir: Path,
    up: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fault in the gateway itself (simulated) after the stream opened: an `error` event."""
    original = ResponseBuilder.text

    def text(self: ResponseBuilder, delta: str) -> None:
        if delta.strip() == "boom":
            raise RuntimeError("simulated fault")
        original(self, delta)

    monkeypatch.setattr(ResponseBuilder, "text", text)
    gateway = await start_gateway(responses_config(state_dir, up))
    up.stream(["fine", " boom", " never"])
    events = named_events((await post_responses(gateway, {"input": "x", "stream": True})).body)
    assert event_types(events)[-1] == "error"
    error = events[-1]
    assert error["code"] == "server_error" and error["param"] is None
    assert error["message"] == "internal error while streaming"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


async def test_a_reader_that_stops_holds_the_run_back_and_is_cut_off(
    state_dir: Path, up: FakeOpenAI
) -> None:
    """The client reads the status line, then nothing. Socket buffers are kept small on both
    sides (on the gateway's side through its listening socket), so the kernel holds little:
    the gateway's writes wait, the run's bounded buffer fills, the upstream is read no
    further, and after the stall limit the connection is cut and the run aborted."""
    config = responses_config(state_dir, up)
    app = build_app(config)
    app[STALL_KEY] = 0.5
    runner = make_runner(app, config)
    await runner.setup()
    listener = _small_buffer_socket(socket.SO_SNDBUF)
    listener.bind(("127.0.0.1", 0))
    await web.SockSite(runner, listener).start()
    gateway = Gateway(app, runner, f"http://127.0.0.1:{listener.getsockname()[1]}", config)
    try:
        chunk = "x" * 4000
        count = 900  # 3.6 MB: under the answer cap, far more than the buffers hold
        up.stream([chunk] * count)
        client = _small_buffer_socket(socket.SO_RCVBUF)
        client.setblocking(False)
        await asyncio.get_running_loop().sock_connect(client, listener.getsockname())
        reader, writer = await asyncio.open_connection(sock=client, limit=16 * 1024)
        body = json.dumps({"input": "x", "stream": True}).encode()
        head = (
            f"POST {RESPONSES_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        async with asyncio.timeout(WAIT):
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        [run] = gateway.runtime.active_runs()
        most = 0
        async with asyncio.timeout(WAIT * 2):
            while not run.done.is_set():
                most = max(most, run.buffered_bytes)
                await asyncio.sleep(0.01)
        writer.close()
        assert run.status == "aborted", (run.status, run.error)
        # The buffer filled up to its bound, and no further.
        assert RUN_BUFFER_BYTES <= most <= RUN_BUFFER_BYTES + len(chunk) + EVENT_OVERHEAD_BYTES
        # The run stopped taking the upstream's answer (whatever the kernel already held).
        assert len(run.text) < len(chunk) * count
        assert (await post_responses(gateway, {"input": "still here?"})).status == 200
    finally:
        await runner.cleanup()


def _small_buffer_socket(option: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, option, 16 * 1024)
    return sock
