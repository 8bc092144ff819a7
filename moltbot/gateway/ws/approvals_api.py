"""exec.approval.list and exec.approval.resolve: operators answering the `exec` tool's
requests for approval (moltbot.tools.approvals; the events in approval_events)."""

from __future__ import annotations

from typing import Any, cast

from moltbot.gateway.ws.call import Call
from moltbot.gateway.ws.params import Params
from moltbot.gateway.ws.protocol import invalid_request
from moltbot.tools.approvals import DECISIONS, Decision


async def exec_approval_list(call: Call, params: Any) -> dict[str, Any]:
    p = Params(params or {})
    p.finish("exec.approval.list")
    return {"approvals": call.runtime.tools.approvals.pending()}


async def exec_approval_resolve(call: Call, params: Any) -> dict[str, Any]:
    p = Params(params)
    approval_id = p.string("id", required=True, min_length=1, max_length=200) or ""
    decision = p.choice("decision", DECISIONS, required=True)
    p.finish("exec.approval.resolve")
    by = f"{call.client.id} ({call.conn.id})"
    resolution = call.runtime.tools.approvals.resolve(approval_id, cast(Decision, decision), by)
    if resolution is None:
        raise invalid_request(f'unknown or already resolved approval id "{approval_id}"')
    return {"ok": True, "id": approval_id, "decision": resolution.decision}
