"""`moltbot agent` answering the exec approvals of its own run.

With `--approve` or `--deny` every request of the run gets that answer (allow-once or deny),
for scripts. Otherwise, when stdin is a terminal, each request is shown on stderr and asked
about, one at a time: [o]nce, [a]lways (the gateway remembers the binary until it restarts),
[d]eny. Without a terminal and without a flag the CLI leaves them alone: another operator may
answer, else the gateway denies when its approval timeout passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any, Literal, TextIO

from moltbot.client import Event, GatewayClient, GatewayClosed, GatewayError

Mode = Literal["ask", "approve", "deny", "ignore"]
ANSWERS = {"o": "allow-once", "once": "allow-once", "a": "allow-always", "always": "allow-always",
           "d": "deny", "deny": "deny", "n": "deny", "no": "deny", "": "deny"}  # fmt: skip


def approval_mode(approve: bool, deny: bool, interactive: bool) -> Mode:
    if approve:
        return "approve"
    if deny:
        return "deny"
    return "ask" if interactive else "ignore"


class Approver:
    def __init__(
        self, client: GatewayClient, run_id: str, mode: Mode, err: TextIO = sys.stderr
    ) -> None:
        self._client = client
        self._run_id = run_id
        self._mode = mode
        self._err = err
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._lines: asyncio.StreamReader | None = None
        self._mine: set[str] = set()

    def show(self, event: Event) -> None:
        """Take the events that concern this run's approvals."""
        payload = event.payload if isinstance(event.payload, dict) else {}
        if event.name == "exec.approval.requested" and self._mode != "ignore":
            request = payload.get("request") or {}
            if request.get("runId") == self._run_id:
                self._mine.add(str(payload.get("id")))
                self._queue.put_nowait(payload)
                if self._worker is None:
                    self._worker = asyncio.create_task(self._work(), name="cli approvals")
        elif event.name == "exec.approval.resolved" and payload.get("id") in self._mine:
            self._mine.discard(payload["id"])
            self._say(f"approval {payload.get('decision')} ({payload.get('resolvedBy')})")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _work(self) -> None:
        while True:
            payload = await self._queue.get()
            if payload.get("id") not in self._mine:
                continue  # settled while it waited its turn
            decision = await self._decide(payload)
            await self._answer(str(payload.get("id")), decision)

    async def _decide(self, payload: dict[str, Any]) -> str:
        request = payload.get("request") or {}
        command = request.get("command", "")
        if self._mode == "approve":
            self._say(f"approving: {command}")
            return "allow-once"
        if self._mode == "deny":
            self._say(f"denying: {command}")
            return "deny"
        self._err.write(
            f"\nmoltbot: the agent wants to run:\n  {command}\n  in {request.get('cwd')}"
            f" ({request.get('reason')})\nAllow? [o]nce, [a]lways, [d]eny: "
        )
        self._err.flush()
        while True:
            line = (await self._read_line()).strip().lower()
            if line in ANSWERS:
                return ANSWERS[line]
            self._err.write("Please answer o, a or d: ")
            self._err.flush()

    async def _read_line(self) -> str:
        if self._lines is None:
            self._lines = asyncio.StreamReader()
            protocol = asyncio.StreamReaderProtocol(self._lines)
            await asyncio.get_running_loop().connect_read_pipe(lambda: protocol, sys.stdin)
        line = await self._lines.readline()
        return line.decode(errors="replace") if line else ""  # end of input: deny

    async def _answer(self, approval_id: str, decision: str) -> None:
        try:
            await self._client.request(
                "exec.approval.resolve", {"id": approval_id, "decision": decision}
            )
        except GatewayError as exc:
            self._say(f"could not answer the approval: {exc.message}")
        except (GatewayClosed, TimeoutError):
            self._say("could not answer the approval: the connection is gone")

    def _say(self, text: str) -> None:
        self._err.write(f"moltbot: {text}\n")
        self._err.flush()
