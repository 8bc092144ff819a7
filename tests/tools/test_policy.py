"""Tool policy: profiles, allow/deny with groups and wildcards, levels that only narrow; and
the strict validation of the `tools` keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from moltbot.config.model import ExecConfig, ToolRules
from moltbot.tools.policy import allowed_tools, expand
from tests.config.helpers import load, load_error, problem_at

FS = {"read", "write", "edit", "ls", "find"}
ALL = FS | {"exec", "web_fetch", "sessions_list", "sessions_history"}


def test_a_fresh_config_gets_file_tools_only() -> None:
    assert allowed_tools(ToolRules(), None) == FS


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (ToolRules(profile="minimal"), FS),
        (ToolRules(profile="coding"), FS | {"exec", "sessions_list", "sessions_history"}),
        (ToolRules(profile="full"), ALL),
        (ToolRules(allow=("group:fs", "web_fetch")), FS | {"web_fetch"}),
        (ToolRules(allow=("*",), deny=("group:runtime",)), ALL - {"exec"}),
        (
            ToolRules(profile="full", deny=("sessions_*", "write")),
            ALL - {"write"} - {"sessions_list", "sessions_history"},
        ),
        (ToolRules(profile="minimal", allow=("exec", "read")), {"read"}),  # allow only narrows
        (ToolRules(allow=("exec",), deny=("exec",)), set()),  # deny wins
        (ToolRules(deny=("*",)), set()),
    ],
)
def test_one_level(rules: ToolRules, expected: set[str]) -> None:
    assert allowed_tools(rules, None) == expected


def test_the_agent_level_only_narrows() -> None:
    top = ToolRules(profile="coding")
    assert allowed_tools(top, ToolRules(profile="full")) == allowed_tools(top, None)
    assert allowed_tools(top, ToolRules(allow=("web_fetch", "read"))) == {"read"}
    assert allowed_tools(top, ToolRules(deny=("group:fs",))) == {
        "exec",
        "sessions_list",
        "sessions_history",
    }
    assert allowed_tools(ToolRules(), ToolRules(profile="full")) == FS


def test_unknown_names_and_groups_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown tool 'exce'"):
        expand("exce")
    with pytest.raises(ValueError, match="unknown tool group 'group:net'"):
        expand("group:net")
    assert expand("nothing*") == frozenset()  # a pattern may match nothing


def test_the_tools_section_loads(tmp_path: Path) -> None:
    text = """{
      tools: {profile: "coding", allow: ["group:fs", "Exec"], deny: ["edit"],
              exec: {security: "full", ask: "always", allowlist: ["git", "/usr/bin/*"],
                     timeoutSeconds: 30, maxTimeoutSeconds: 60, maxOutputBytes: 5000,
                     approvalTimeoutSeconds: 10, sandbox: "bwrap", network: true},
              web: {fetch: {allowedHosts: ["intranet.example", "10.0.0.0/8"], maxBytes: 1000,
                            timeoutSeconds: 3, maxChars: 500}}},
      agents: {defaults: {maxToolRounds: 3},
               list: [{id: "main"}, {id: "ro", tools: {allow: ["read"], deny: ["*"]}}]},
    }"""
    config = load(tmp_path, text).config
    assert config.tools.rules == ToolRules("coding", ("group:fs", "exec"), ("edit",))
    assert config.tools.exec == ExecConfig(
        security="full",
        ask="always",
        allowlist=("git", "/usr/bin/*"),
        timeout_seconds=30,
        max_timeout_seconds=60,
        max_output_bytes=5000,
        approval_timeout_seconds=10,
        sandbox="bwrap",
        network=True,
    )
    assert config.tools.web_fetch.allowed_hosts == ("intranet.example", "10.0.0.0/8")
    assert config.agents.defaults.max_tool_rounds == 3
    assert config.agents.list[1].tools == ToolRules(None, ("read",), ("*",))


def test_bad_tools_keys_are_reported_with_their_paths(tmp_path: Path) -> None:
    text = """{
      tools: {profile: "max", deny: ["exce"], exec: {security: "yes", ask: "sometimes",
              allowlist: ["bin/ls"], timeoutSeconds: 900, sandbox: "docker"},
              web: {fetch: {allowedHosts: ["not a host"], maxChars: 5}}, extra: 1},
      agents: {defaults: {maxToolRounds: 0}, list: [{id: "a", tools: {exec: {}}}]},
    }"""
    error = load_error(tmp_path, text)
    assert problem_at(error, "tools.profile").startswith('expected "minimal", "coding" or "full"')
    assert problem_at(error, "tools.deny[0]").startswith("unknown tool 'exce'")
    assert problem_at(error, "tools.exec.security").startswith('expected "deny", "allowlist"')
    assert problem_at(error, "tools.exec.ask").startswith('expected "off", "on-miss" or')
    assert problem_at(error, "tools.exec.allowlist[0]") == (
        'expected an absolute path or a bare command name, got "bin/ls"'
    )
    assert problem_at(error, "tools.exec.timeoutSeconds") == (
        "must not be above maxTimeoutSeconds (600)"
    )
    assert problem_at(error, "tools.exec.sandbox").startswith('expected "auto", "bwrap" or')
    assert "not a host name" in problem_at(error, "tools.web.fetch.allowedHosts")
    assert problem_at(error, "tools.web.fetch.maxChars").startswith("expected an integer from 100")
    assert problem_at(error, "tools.extra").startswith("unknown key")
    assert problem_at(error, "agents.defaults.maxToolRounds").startswith("expected an integer")
    assert problem_at(error, "agents.list[0].tools.exec") == (
        "unknown key (expected one of: allow, deny, profile)"
    )
