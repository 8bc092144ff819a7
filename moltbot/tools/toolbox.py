"""The agent tools one runtime offers: built once from the config, chosen per agent by policy."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from moltbot.agents.directory import Agent
from moltbot.agents.store.protocol import SessionStore
from moltbot.config.model import Config, ToolRules
from moltbot.content import Tool
from moltbot.logs import get_logger
from moltbot.tools.approvals import Approvals
from moltbot.tools.base import AgentTool, ToolContext
from moltbot.tools.exec import ExecTool
from moltbot.tools.fs import FILE_TOOLS
from moltbot.tools.policy import allowed_tools
from moltbot.tools.sandbox import bwrap_available
from moltbot.tools.sessions import SessionsHistoryTool, SessionsListTool
from moltbot.tools.web import WebFetchTool

log = get_logger("moltbot.tools")


class Toolbox:
    def __init__(self, config: Config, store: SessionStore) -> None:
        exec_config = config.tools.exec
        self.approvals = Approvals(exec_config.approval_timeout_seconds)
        self._store = store
        # What a sandboxed command must not see: sessions, other workspaces, secrets.
        hidden = tuple(p for p in (config.state_dir, config.config_path, Path.home()) if p)
        tools: tuple[AgentTool, ...] = (
            *FILE_TOOLS,
            ExecTool(exec_config, hidden),
            WebFetchTool(config.tools.web_fetch),
            SessionsListTool(),
            SessionsHistoryTool(),
        )
        self._tools: dict[str, AgentTool] = {tool.name: tool for tool in tools}
        self._top = config.tools.rules
        self._agent_rules: Mapping[str, ToolRules | None] = {
            entry.id: entry.tools for entry in config.agents.list
        }
        self._no_exec = exec_config.security == "deny"  # offered, it could only ever refuse
        self._by_agent: dict[str, tuple[AgentTool, ...]] = {}
        self._warn_about_sandbox(config)

    def for_agent(self, agent: Agent) -> tuple[AgentTool, ...]:
        """The tools `agent` may use, in a fixed order."""
        chosen = self._by_agent.get(agent.id)
        if chosen is None:
            names = allowed_tools(self._top, self._agent_rules.get(agent.id))
            if self._no_exec:
                names -= {"exec"}
            chosen = tuple(tool for name, tool in self._tools.items() if name in names)
            self._by_agent[agent.id] = chosen
        return chosen

    def context(self, agent: Agent, session_key: str, run_id: str) -> ToolContext:
        return ToolContext(
            agent_id=agent.id,
            workspace=agent.workspace,
            session_key=session_key,
            run_id=run_id,
            store=self._store,
            approvals=self.approvals,
        )

    def _warn_about_sandbox(self, config: Config) -> None:
        mode = config.tools.exec.sandbox
        levels = list(self._agent_rules.values()) or [None]  # no agents.list: one agent
        offered = not self._no_exec and any("exec" in allowed_tools(self._top, r) for r in levels)
        if not offered or mode == "off" or bwrap_available():
            return
        if mode == "bwrap":
            log.warning("tools.exec.sandbox is bwrap but /usr/bin/bwrap is missing: exec fails")
        else:
            log.info("bubblewrap is not installed: exec commands run without a sandbox")


@functools.lru_cache(maxsize=64)
def definitions(tools: tuple[AgentTool, ...]) -> tuple[Tool, ...]:
    """The tools as the model is told about them: the same few sets every run, made once."""
    return tuple(Tool(t.name, t.description, t.parameters) for t in tools)
