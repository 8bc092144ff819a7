"""The configured agents: ids, the default one, workspaces and model choices."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from moltbot.config.model import AgentConfig, Config, Identity


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    name: str | None
    workspace: Path
    identity: Identity | None
    is_default: bool
    model_refs: tuple[str, ...]  # primary first, then fallbacks; () = the gateway default model


class AgentDirectory:
    """Looks agents up by id. With no `agents.list`, one agent `main` exists."""

    def __init__(self, config: Config) -> None:
        entries = config.agents.list or (AgentConfig(id="main"),)
        default_entry = next((a for a in entries if a.default), entries[0])
        self.default_id = default_entry.id
        self._agents = {a.id: self._build(config, a, a is default_entry) for a in entries}

    @staticmethod
    def _build(config: Config, entry: AgentConfig, is_default: bool) -> Agent:
        defaults = config.agents.defaults
        workspace = entry.workspace or (defaults.workspace if is_default else None)
        if workspace is None:
            suffix = "workspace" if is_default else f"workspace-{entry.id}"
            workspace = config.state_dir / suffix
        choice = entry.model or defaults.model
        primary = choice.primary or defaults.model.primary
        fallbacks = choice.fallbacks if choice.fallbacks is not None else defaults.model.fallbacks
        refs = ((primary,) if primary else ()) + (fallbacks or ())
        return Agent(
            entry.id, entry.name, workspace, entry.identity, is_default, tuple(dict.fromkeys(refs))
        )

    def get(self, agent_id: str) -> Agent | None:
        return self._agents.get(agent_id)

    @property
    def default(self) -> Agent:
        return self._agents[self.default_id]

    def __iter__(self) -> Iterator[Agent]:
        """Every agent, the default first."""
        yield self.default
        yield from (a for a in self._agents.values() if not a.is_default)
