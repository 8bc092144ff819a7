"""The `agent` method's idempotency keys across processes that share the session store.

Within one process the runtime's memory of its runs and the dedupe cache answer a repeated
key. When other workers or replicas share the store (`store.runs` is set), a new key is first
claimed in the store's runs table: the process that claims it runs it and keeps its final
answer there; any other process that sees the key again answers from that record, waiting
(by polling, bounded) for the answer while the run is still going elsewhere.
"""

from __future__ import annotations

import asyncio
from typing import Any

from moltbot.agents.run import now_ms
from moltbot.agents.store.records import RunRecord, SessionStoreError
from moltbot.gateway.ws.call import Call
from moltbot.gateway.ws.protocol import ErrorCode, RpcError, unavailable
from moltbot.logs import get_logger

log = get_logger("moltbot.ws")

POLL_SECONDS = 0.5
# How long an answer is awaited beyond the run's own time limit (its process draining).
WAIT_MARGIN_SECONDS = 60.0


async def claim(call: Call, run_id: str, session_key: str) -> RunRecord | None:
    """Claim `run_id` for a run this process is about to start: None when it is new (or no
    other process shares the store), else the record of the earlier claim."""
    runs = call.runtime.store.runs
    if runs is None:
        return None
    try:
        return await runs.claim(run_id, session_key, now_ms())
    except SessionStoreError as exc:
        raise unavailable(f"could not check the idempotency key: {exc}") from None


async def remember(call: Call, run_id: str, ok: bool, payload: Any, error: RpcError | None) -> None:
    """Keep a run's final answer for repeats of its key in any process."""
    runs = call.runtime.store.runs
    if runs is None:
        return
    outcome = {"ok": ok, "payload": payload, "error": error.shape() if error else None}
    try:
        await runs.end(run_id, now_ms(), outcome)
    except SessionStoreError as exc:
        log.warning("could not keep a run's answer for its idempotency key", error=str(exc))


def answer_repeat(call: Call, record: RunRecord) -> None:
    """Answer a key claimed elsewhere the way `agent` answers: accepted now, the result when
    the record has it."""
    accepted = {"runId": record.run_id, "status": "accepted", "acceptedAt": record.accepted_at}
    call.respond(True, accepted)
    conn, request_id = call.conn, call.request_id
    limit = call.config.agents.defaults.timeout_seconds + WAIT_MARGIN_SECONDS

    async def final() -> None:
        found = await _wait_for_outcome(call, record, limit)
        if found is None or found.outcome is None:
            message = "the run of this idempotency key is on another gateway process, which "
            conn.send_response(request_id, False, None, unavailable(message + "never answered"))
            return
        outcome = found.outcome
        conn.send_response(request_id, outcome["ok"], outcome["payload"], _error(outcome))

    call.hub.spawn(final(), name=f"agent repeat {record.run_id}")


async def _wait_for_outcome(call: Call, record: RunRecord, limit: float) -> RunRecord | None:
    runs = call.runtime.store.runs
    assert runs is not None
    found: RunRecord | None = record
    try:
        async with asyncio.timeout(limit):
            while found is not None and found.outcome is None:
                await asyncio.sleep(POLL_SECONDS)
                try:
                    found = await runs.get(record.run_id)
                except SessionStoreError as exc:
                    log.warning("could not read a run's answer", error=str(exc))
    except TimeoutError:
        return None
    return found


def _error(outcome: dict[str, Any]) -> RpcError | None:
    shape = outcome.get("error")
    if not shape:
        return None
    return RpcError(
        ErrorCode(shape["code"]),
        shape["message"],
        details=shape.get("details"),
        retryable=shape.get("retryable"),
        retry_after_ms=shape.get("retryAfterMs"),
    )
