"""The scenarios of issue 6 and the request bytes each side of a run sends.

Both sides send the same chat request; direct at the upstream it names the upstream model
(`chunks16`), through the gateway the agent mapped to it (`moltbot/s16`) with the bearer token.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from bench.gateway import AGENT_MODELS
from bench.http1 import build_request

# "pg2": through `--workers 2` on PostgreSQL, by turns with "sqlite1", one process on SQLite
# (see BENCHMARKS.md)
Side = Literal["direct", "gateway", "floor", "pg2", "sqlite1"]
Phase = Literal["main", "seeded"]
PROMPT = "Say hello to the benchmark."


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    agent: str  # gateway agent id; the upstream model is AGENT_MODELS[agent]
    stream: bool
    concurrency: int
    count: int
    users: bool = False  # a `user` per connection: every request appends to its session
    phase: Phase = "main"  # "seeded": a gateway whose store holds the seeded sessions

    @property
    def model(self) -> str:
        return AGENT_MODELS[self.agent]


SCENARIOS = (
    Scenario("a", "non-stream c=1", "fast", stream=False, concurrency=1, count=500),
    Scenario("b", "non-stream c=32", "fast", stream=False, concurrency=32, count=3000),
    Scenario("c", "stream 16 chunks c=32", "s16", stream=True, concurrency=32, count=2000),
    Scenario("d", "stream 16x20ms c=200", "s16d20", stream=True, concurrency=200, count=2000),
    Scenario("e", "(b) + user/conn", "fast", stream=False, concurrency=32, count=3000, users=True),
    Scenario(
        "e100k",
        "(e), 100k sessions stored",
        "fast",
        stream=False,
        concurrency=32,
        count=3000,
        users=True,
        phase="seeded",
    ),
)


def scaled(scenario: Scenario, factor: float) -> Scenario:
    """A shorter run of the same shape (--quick); never below one request per connection."""
    count = max(scenario.concurrency, int(scenario.count * factor))
    return replace(scenario, count=count)


def chat_body(scenario: Scenario, model: str, user: str | None) -> dict:
    body: dict = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if scenario.stream:
        body.update(stream=True, stream_options={"include_usage": True})
    if user is not None:
        body["user"] = user
    return body


def requests_for(
    scenario: Scenario, side: Side, port: int, token: str, run_tag: str
) -> list[bytes]:
    """One request per connection when each has its own user, else one for all.

    `run_tag` makes the users of every run new, so each run starts its sessions empty and
    runs of the same scenario see the same history lengths."""
    if side == "direct":
        model, path, headers = scenario.model, "/v1/chat/completions", {}
    else:
        model, path = f"moltbot/{scenario.agent}", "/v1/chat/completions"
        headers = {"Authorization": f"Bearer {token}"}
    users = (
        [f"bench-{run_tag}-{i}" for i in range(scenario.concurrency)] if scenario.users else [None]
    )
    return [
        build_request("127.0.0.1", port, path, chat_body(scenario, model, user), headers)
        for user in users
    ]
