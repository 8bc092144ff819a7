"""Provider credentials that an upstream echoes back stay out of everything the gateway writes:
HTTP answers, stream error frames, the stored history (over WS and in the SQLite file) and the
logs. A real gateway process, a fake upstream that repeats what it was sent."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from moltbot.client import GatewayClient
from tests.fake_upstreams import FakeOpenAI
from tests.process import child_env, free_port, gateway_process, write_config

TOKEN = "secrets-test-token-6b0d"
# Random-looking parts that appear nowhere else, so a piece of one found anywhere is a leak.
API_KEY = "sk-live-4c9e1f7a2d8b3e60f5a1"
HEADER_SECRET = "relay-7d2f9a4c1e8b6035"
QUERY_SECRET = "q-b3e81f5c7a2d9046"
SECRETS = (API_KEY, HEADER_SECRET, QUERY_SECRET)
SESSION = "agent:main:leaky"


def leaked(text: str, secrets: tuple[str, ...] = SECRETS, size: int = 8) -> list[str]:
    """Every `size`-character piece of a secret's random part found in `text`."""
    pieces = {s[i : i + size] for s in secrets for i in range(len(s) - size + 1)}
    return sorted(p for p in pieces if "-" not in p and p in text)


def _config(up: FakeOpenAI) -> dict[str, object]:
    return {
        "gateway": {
            "auth": {"token": TOKEN},
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
        },
        "models": {
            "providers": {
                "up": {
                    "baseUrl": f"{up.base_url}?api-version=2024-06-01&api-key={QUERY_SECRET}",
                    "apiKey": API_KEY,
                    "headers": {"X-Relay-Auth": HEADER_SECRET},
                    "api": "openai-completions",
                    "models": [{"id": "m1", "name": "M1"}],
                }
            }
        },
        "agents": {"defaults": {"model": {"primary": "up/m1"}}},
    }


def _store_text(state_dir: Path) -> str:
    """The raw bytes of the session database and its WAL, which holds the newest writes."""
    files = sorted(state_dir.glob("sessions.sqlite*"))
    assert files
    return b"".join(path.read_bytes() for path in files).decode("utf-8", "replace")


async def _post(http: aiohttp.ClientSession, url: str, stream: bool) -> tuple[int, str]:
    body = {"model": "moltbot", "stream": stream, "messages": [{"role": "user", "content": "x"}]}
    headers = {"Authorization": f"Bearer {TOKEN}", "x-moltbot-session-key": SESSION}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
        return resp.status, await resp.text()


async def test_echoed_credentials_reach_no_answer_history_or_log(state_dir: Path) -> None:
    async with FakeOpenAI(reply="never used") as up:
        up.echo_request(401)  # not retried: one echo, every secret in the first 400 characters
        # Across the 300-character mark where messages used to be cut before being scrubbed.
        filler = "." * 290
        up.error_frame(f"{filler} relay failed for {API_KEY} with {HEADER_SECRET}", after_chunks=1)
        path = write_config(state_dir / "moltbot.json", _config(up))
        args = ["gateway", "--config", str(path), "--port", str(free_port()), "--verbose"]
        async with gateway_process(args, child_env(state_dir)) as gateway:
            async with aiohttp.ClientSession() as http:
                status, plain = await _post(http, gateway.url, stream=False)
                stream_status, streamed = await _post(http, gateway.url, stream=True)
            ws_url = gateway.url.replace("http://", "ws://")
            client = await GatewayClient.connect(ws_url, token=TOKEN, client_id="test", mode="test")
            try:
                history = await client.request("chat.history", {"sessionKey": SESSION})
            finally:
                await client.close()
            assert await gateway.stop() == 0
        sent = up.requests[0]
        assert sent.headers["Authorization"] == f"Bearer {API_KEY}"  # the secrets did go out
        assert sent.headers["X-Relay-Auth"] == HEADER_SECRET
        assert sent.query == f"api-version=2024-06-01&api-key={QUERY_SECRET}"
    assert status == 502
    message = json.loads(plain)["error"]["message"]
    for masked in ("api-key=***", "Authorization: Bearer ***", "X-Relay-Auth: ***"):
        assert masked in message
    assert stream_status == 200 and '"error"' in streamed and "***" in streamed
    errors = [m.get("errorMessage", "") for m in history["messages"]]
    assert len(errors) == 4 and all("***" in e for e in errors[1::2])
    logs = "\n".join(json.dumps(entry) for entry in gateway.log)
    for where, text in [
        ("502 body", plain),
        ("stream", streamed),
        ("chat.history", json.dumps(history)),
        ("logs", logs),
        ("session store", _store_text(state_dir)),
    ]:
        assert leaked(text) == [], where
