from __future__ import annotations

from pathlib import Path

import pytest

from moltbot.config import normalize_agent_id
from tests.config.helpers import load


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("main", "main"),
        ("  Research  ", "research"),
        ("my_agent-2", "my_agent-2"),
        ("My Agent!", "my-agent"),
        ("a  b//c", "a-b-c"),
        ("--x--", "x"),
        ("!!!", "main"),
        ("", "main"),
        ("   ", "main"),
        ("Émile", "mile"),
        ("x" * 70, "x" * 64),
        ("a b" + "c" * 70, ("a-b" + "c" * 70)[:64]),
        ("9lives", "9lives"),
    ],
)
def test_normalize_agent_id(raw: str, expected: str) -> None:
    assert normalize_agent_id(raw) == expected


def test_normalised_ids_are_used_and_noticed(tmp_path: Path) -> None:
    loaded = load(tmp_path, '{agents: {list: [{id: "My Agent"}, {id: "main"}]}}')
    assert [agent.id for agent in loaded.config.agents.list] == ["my-agent", "main"]
    assert 'agents.list[0].id: agent id "My Agent" is used as "my-agent"' in loaded.notices


def test_several_defaults_give_a_notice(tmp_path: Path) -> None:
    text = '{agents: {list: [{id: "a", default: true}, {id: "b", default: true}]}}'
    loaded = load(tmp_path, text)
    assert [agent.default for agent in loaded.config.agents.list] == [True, True]
    assert any("several agents are marked default" in notice for notice in loaded.notices)
