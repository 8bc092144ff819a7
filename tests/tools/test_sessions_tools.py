"""sessions_list and sessions_history: the agent's own sessions only, through the store."""

from __future__ import annotations

from moltbot.config.model import AgentConfig, ToolRules
from tests.fake_tool_upstream import Call, Reply, SeenRequest, ToolUpstream
from tests.tools.conftest import chat, tool_config


def script(request: SeenRequest) -> Reply:
    if request.last_user() == "look back" and not request.tool_results():
        return Reply(
            calls=(
                Call("sessions_list", {}),
                Call("sessions_history", {"sessionKey": "agent:main:older", "limit": 2}),
                Call("sessions_history", {"sessionKey": "agent:other:theirs"}),
                Call("sessions_history", {"sessionKey": "agent:main:never"}),
            )
        )
    return Reply(text=f"re: {request.last_user()}")


async def test_an_agent_reads_its_own_sessions_only(state_dir, workspace, start_gateway):
    agents = (AgentConfig(id="main", default=True), AgentConfig(id="other"))
    async with ToolUpstream(script) as up:
        config = tool_config(state_dir, up, workspace, agents=agents, rules=ToolRules("full"))
        gateway = await start_gateway(config)
        await chat(gateway, "first words", session="agent:main:older")
        await chat(gateway, "secret plans", session="agent:other:theirs")
        await chat(gateway, "hello", session="agent:main:now")
        await chat(gateway, "look back", session="agent:main:now")
    listing, history, theirs, missing = up.requests[-1].tool_results()
    lines = listing.splitlines()
    assert [line.split()[0] for line in lines] == ["agent:main:now", "agent:main:older"]
    assert lines[0].endswith("turns 1  (this session)") and lines[1].endswith("turns 1")
    assert "agent:other" not in listing
    user, reply = history.split("\n\n")
    assert user.endswith("] user: first words") and reply.endswith("] assistant: re: first words")
    # Another agent's session looks like one that does not exist.
    assert theirs == "error: no session 'agent:other:theirs' of this agent (see sessions_list)"
    assert missing == "error: no session 'agent:main:never' of this agent (see sessions_list)"
