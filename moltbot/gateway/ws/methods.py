"""The methods this gateway answers, with the scope each needs (protocol §4.1).

`agent.follow` / `agent.unfollow` are ours: the reference broadcasts every run's `agent`
events to every operator socket; here a socket gets the events of runs it started, or of runs
and sessions it follows.
"""

from __future__ import annotations

from moltbot.gateway.ws.agent_api import agent, agent_follow, agent_unfollow, agent_wait
from moltbot.gateway.ws.approvals_api import exec_approval_list, exec_approval_resolve
from moltbot.gateway.ws.call import ADMIN_SCOPE as ADMIN
from moltbot.gateway.ws.call import APPROVALS_SCOPE as APPROVALS
from moltbot.gateway.ws.call import READ_SCOPE as READ
from moltbot.gateway.ws.call import WRITE_SCOPE as WRITE
from moltbot.gateway.ws.call import Method
from moltbot.gateway.ws.chat_api import chat_abort, chat_history, chat_send
from moltbot.gateway.ws.info import agents_list, health, models_list, status
from moltbot.gateway.ws.sessions_api import (
    sessions_delete,
    sessions_list,
    sessions_preview,
    sessions_reset,
)

METHODS: dict[str, Method] = {
    "health": Method(health, READ),
    "status": Method(status, READ),
    "agents.list": Method(agents_list, READ),
    "models.list": Method(models_list, READ),
    "sessions.list": Method(sessions_list, READ),
    "sessions.preview": Method(sessions_preview, READ),
    "sessions.reset": Method(sessions_reset, ADMIN),
    "sessions.delete": Method(sessions_delete, ADMIN),
    "agent": Method(agent, WRITE),
    "agent.wait": Method(agent_wait, WRITE),
    "agent.follow": Method(agent_follow, READ),
    "agent.unfollow": Method(agent_unfollow, READ),
    "chat.send": Method(chat_send, WRITE),
    "chat.history": Method(chat_history, READ),
    "chat.abort": Method(chat_abort, WRITE),
    "exec.approval.list": Method(exec_approval_list, APPROVALS),
    "exec.approval.resolve": Method(exec_approval_resolve, APPROVALS),
}

# The events this gateway emits (hello-ok `features.events`).
EVENTS = [
    "connect.challenge",
    "agent",
    "chat",
    "tick",
    "shutdown",
    "exec.approval.requested",
    "exec.approval.resolved",
]
