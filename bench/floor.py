"""`--floor`: a bare aiohttp proxy doing the least any aiohttp gateway must do per request.

It checks the bearer token, maps `moltbot/<agent>` to the upstream model, POSTs a streaming
request to the upstream with one shared aiohttp ClientSession (no pool cap), decodes the SSE
answer and either collects it into one `chat.completion` or re-encodes each chunk to the client.
No sessions, no runtime, no logging. Its CPU per request is the floor of the gateway's
architecture (aiohttp server + aiohttp client on asyncio), measured on the same machine.

Run as `python -m bench.floor --port P --upstream-port U --token T`; prints `ready`.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import signal
import sys
from typing import Any

import aiohttp
from aiohttp import web

from bench.gateway import AGENT_MODELS

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)
CONFIG_KEY = web.AppKey("config", dict)


def upstream_body(body: dict[str, Any]) -> dict[str, Any]:
    model = AGENT_MODELS[str(body.get("model", "moltbot/fast")).removeprefix("moltbot/")]
    return {
        "model": model,
        "messages": body["messages"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def frames(response: aiohttp.ClientResponse) -> Any:
    """The decoded JSON of each `data:` line until [DONE]."""
    async for line in response.content:
        if not line.startswith(b"data: "):
            continue
        data = line[6:].strip()
        if data == b"[DONE]":
            return
        yield json.loads(data)


async def handle(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG_KEY]
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not hmac.compare_digest(token.encode(), config["token"].encode()):
        raise web.HTTPUnauthorized()
    body = json.loads(await request.read())
    session = request.app[SESSION_KEY]
    async with session.post(config["url"], json=upstream_body(body)) as upstream:
        if body.get("stream"):
            return await relay(request, upstream, body["model"])
        return await collect(upstream, body["model"])


async def collect(upstream: aiohttp.ClientResponse, model: str) -> web.Response:
    text: list[str] = []
    usage = None
    async for chunk in frames(upstream):
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices", []):
            text.append(choice.get("delta", {}).get("content") or "")
    message = {"role": "assistant", "content": "".join(text)}
    answer = {
        "id": "chatcmpl-floor",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }
    return web.json_response(answer)


async def relay(
    request: web.Request, upstream: aiohttp.ClientResponse, model: str
) -> web.StreamResponse:
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    async for chunk in frames(upstream):
        chunk["model"] = model  # re-encoded like a gateway must (its own model name and id)
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def serve(port: int, upstream_port: int, token: str) -> None:
    app = web.Application()
    app[CONFIG_KEY] = {
        "token": token,
        "url": f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
    }
    app[SESSION_KEY] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        await app[SESSION_KEY].close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.upstream_port, args.token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
