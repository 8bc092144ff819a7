"""The command line as users and systemd run it: real processes, real ports."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from moltbot import __version__
from tests.fake_upstreams import FakeOpenAI
from tests.process import child_env, free_port, gateway_process, run_cli, write_config

SECRET = "cli-secret-9b1c77d0"


def _config(**gateway: object) -> dict[str, object]:
    base = {
        "auth": {"token": SECRET},
        "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
    }
    return {"gateway": {**base, **gateway}}


def test_version(state_dir: Path) -> None:
    result = run_cli(["--version"], child_env(state_dir))
    assert result.returncode == 0
    assert result.stdout.strip() == f"moltbot {__version__}"


def test_invalid_config_is_one_line_and_exit_2(state_dir: Path) -> None:
    path = state_dir / "bad.json5"
    path.write_text('{gateway: {bind: "everywhere", prot: 1}, // comment\n}')
    result = run_cli(["config", "validate", "--config", str(path)], child_env(state_dir))
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert 'gateway.bind: expected "loopback", "lan" or an IP address, got "everywhere"' in line
    assert "gateway.prot" in line and "port" in line
    assert "Traceback" not in result.stderr


def test_unknown_option_is_one_line_and_exit_2(state_dir: Path) -> None:
    result = run_cli(["gateway", "--no-such-flag"], child_env(state_dir))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_show_redacts_secrets(state_dir: Path) -> None:
    path = write_config(state_dir / "moltbot.json", _config())
    result = run_cli(["config", "show", "--config", str(path)], child_env(state_dir))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["gateway"]["auth"]["token"] == "***"
    assert SECRET not in result.stdout


def test_config_validate_uses_env_token_and_port(state_dir: Path) -> None:
    env = child_env(
        state_dir, {"CLAWDBOT_GATEWAY_TOKEN": "legacy-tok", "MOLTBOT_GATEWAY_PORT": "19555"}
    )
    result = run_cli(["config", "show"], env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["gateway"]["port"] == 19555
    assert shown["gateway"]["auth"]["token"] == "***"


def test_setup_writes_a_starter_config_and_refuses_to_overwrite(state_dir: Path) -> None:
    env = child_env(state_dir)
    first = run_cli(["setup"], env)
    assert first.returncode == 0, first.stderr
    written = state_dir / "moltbot.json"
    assert written.stat().st_mode & 0o777 == 0o600
    token = re.search(r"gateway token: (\S+)", first.stdout)[1]  # type: ignore[index]
    assert token in written.read_text()
    assert run_cli(["config", "validate"], env).returncode == 0
    second = run_cli(["setup"], env)
    assert second.returncode == 2
    assert "not overwriting" in second.stderr
    assert token in written.read_text()


def test_lan_bind_without_secret_refuses_to_start(state_dir: Path) -> None:
    path = write_config(state_dir / "moltbot.json", {"gateway": {"bind": "lan"}})
    result = run_cli(["gateway", "--config", str(path)], child_env(state_dir), timeout=20)
    assert result.returncode == 2
    assert "refusing to bind 0.0.0.0" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("auth", "env", "named"),
    [
        ({"token": "fifteen-chars-x"}, {}, "gateway.auth.token"),
        ({"mode": "password", "password": "hunter2"}, {}, "gateway.auth.password"),
        ({}, {"MOLTBOT_GATEWAY_TOKEN": "short-env-tok"}, "MOLTBOT_GATEWAY_TOKEN"),
    ],
    ids=["token", "password", "env-token"],
)
def test_weak_secret_refuses_to_start(
    state_dir: Path, auth: dict[str, str], env: dict[str, str], named: str
) -> None:
    path = write_config(state_dir / "moltbot.json", {"gateway": {"auth": auth}})
    result = run_cli(
        ["gateway", "--config", str(path), "--port", str(free_port())],
        child_env(state_dir, env),
        timeout=20,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]  # after the "config loaded" log line
    assert line.startswith("moltbot: ") and "too short" in line and named in line
    secret = auth.get("token") or auth.get("password") or env["MOLTBOT_GATEWAY_TOKEN"]
    assert secret not in result.stderr


def test_taken_port_is_a_clean_error(state_dir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_config(state_dir / "moltbot.json", _config())
        result = run_cli(
            ["gateway", "--config", str(path), "--port", str(port)],
            child_env(state_dir),
            timeout=20,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


async def test_make_run_entry_point_serves_the_printed_curl(state_dir: Path) -> None:
    """`make run` runs `python -m moltbot dev`: first run writes a dev config, prints URL,
    token and a curl line, and serves it with the offline model."""
    port = free_port()
    async with gateway_process(["dev", "--port", str(port)], child_env(state_dir)) as gateway:
        banner = (await gateway.process.stdout.read(4096)).decode()  # type: ignore[union-attr]
        token = re.search(r"token:\s+(\S+)", banner)[1]  # type: ignore[index]
        assert f"http://127.0.0.1:{port}" in banner and "curl" in banner
        assert f"chat:   http://127.0.0.1:{port}/#token={token}\n" in banner  # the web page
        body = json.loads(re.search(r"-d '(.+)'", banner)[1])  # type: ignore[index]
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{gateway.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status == 200
                reply = await resp.json()
        assert reply["choices"][0]["message"]["content"] == "Hello, Moltbot"
        assert await gateway.stop() == 0
    request_lines = [e for e in gateway.log if e.get("event") == "http request"]
    assert request_lines and request_lines[0]["path"] == "/v1/chat/completions"
    assert request_lines[0]["status"] == 200 and request_lines[0]["agent"] == "main"
    assert len(request_lines[0]["session"]) == 12  # a hash, not the key
    assert token not in json.dumps(gateway.log)


async def test_sigterm_lets_an_in_flight_stream_finish_then_exits_0(state_dir: Path) -> None:
    chunks = [f"part{i} " for i in range(6)]
    async with FakeOpenAI() as upstream:
        upstream.stream(chunks, delay=0.15)
        config = _config()
        config["models"] = {
            "providers": {
                "up": {
                    "baseUrl": upstream.base_url,
                    "api": "openai-completions",
                    "models": [{"id": "m1", "name": "M1"}],
                }
            }
        }
        path = write_config(state_dir / "moltbot.json", config)
        port = str(free_port())
        async with gateway_process(
            ["gateway", "--config", str(path), "--port", port], child_env(state_dir)
        ) as gateway:
            body = {
                "model": "moltbot",
                "stream": True,
                "messages": [{"role": "user", "content": "go"}],
            }
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{gateway.url}/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {SECRET}"},
                ) as resp,
            ):
                assert resp.status == 200
                first = await resp.content.readline()
                assert first.startswith(b"data: ")
                gateway.process.send_signal(signal.SIGTERM)
                rest = (await asyncio.wait_for(resp.content.read(), 20)).decode()
            code = await gateway.stop()
    assert code == 0
    content = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in rest.splitlines()
        if line.startswith("data: {")
    )
    assert content == "".join(chunks)
    assert rest.rstrip().endswith("data: [DONE]")
    assert any(e.get("event") == "gateway stopped" for e in gateway.log)


def test_unusable_session_store_is_one_line_and_exit_2(state_dir: Path) -> None:
    blocker = state_dir / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    config = {**_config(), "session": {"store": str(blocker / "sessions.sqlite")}}
    path = write_config(state_dir / "moltbot.json", config)
    result = run_cli(
        ["gateway", "--config", str(path), "--port", str(free_port())],
        child_env(state_dir),
        timeout=20,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot open the session store" in result.stderr.strip().splitlines()[-1]


def test_absurdly_nested_config_is_a_parse_error(state_dir: Path) -> None:
    path = state_dir / "deep.json5"
    path.write_text("{a:" * 5000 + "1" + "}" * 5000)
    result = run_cli(["config", "validate", "--config", str(path)], child_env(state_dir))
    assert result.returncode == 2
    assert "nested too deeply" in result.stderr and "Traceback" not in result.stderr


def test_several_workers_on_sqlite_is_a_config_error_saying_why(state_dir: Path) -> None:
    path = write_config(state_dir / "moltbot.json", _config())
    result = run_cli(["gateway", "--config", str(path), "--workers", "2"], child_env(state_dir))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "--workers: 2 workers need the postgres session store" in line
    assert "per-process turn ordering and caches cannot be shared through one file" in line
    bad = run_cli(["gateway", "--config", str(path), "--workers", "0"], child_env(state_dir))
    assert bad.returncode == 2 and "expected 1 to 64 workers" in bad.stderr


def test_workers_that_cannot_open_the_store_stop_the_gateway_with_one_line(
    state_dir: Path,
) -> None:
    import socket

    with socket.socket() as refusing:  # bound, never listening: connections are refused
        refusing.bind(("127.0.0.1", 0))
        port = refusing.getsockname()[1]
        dsn = f"postgresql://moltbot:pw-SECRET@127.0.0.1:{port}/db"
        store = {"backend": "postgres", "dsn": dsn}
        path = write_config(state_dir / "moltbot.json", {**_config(), "session": {"store": store}})
        args = ["gateway", "--config", str(path), "--port", str(free_port()), "--workers", "2"]
        result = run_cli(args, child_env(state_dir), timeout=60)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("moltbot: cannot open the session store postgresql://moltbot:***@")
    assert "pw-SECRET" not in result.stderr and "Traceback" not in result.stderr
