"""systemd integration: the unit the installer renders, and sd_notify from a real gateway."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.fake_upstreams import FakeOpenAI
from tests.process import REPO, child_env, free_port, gateway_process, write_config


def test_installer_renders_a_complete_hardened_unit(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(REPO / "scripts/install-systemd.sh"), "--dry-run", "--user",
         "--python", sys.executable, "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=True,
    )
    unit = result.stdout
    assert not re.search(r"@[A-Z_]+@", unit)  # every placeholder filled
    lines = set(unit.splitlines())
    assert f"ExecStart={sys.executable} -m moltbot gateway" in lines
    assert {"Type=notify", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
            f"ReadWritePaths={tmp_path}", "RestartPreventExitStatus=2"} <= lines


HARDENING = {
    "ProtectHome=read-only",
    "PrivateDevices=yes",
    "PrivateMounts=yes",
    "ProtectKernelLogs=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "SystemCallArchitectures=native",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "MemoryDenyWriteExecute=yes",
    "LockPersonality=yes",
    "RemoveIPC=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "UMask=0077",
    "LimitNOFILE=65536",
    "MemoryMax=1G",
    "TasksMax=256",
}
# What the README says `systemd-analyze security` rates the unit (measured with systemd 252).
README_SCORE = 1.3


def render(*options: str) -> str:
    result = subprocess.run(
        [str(REPO / "scripts/install-systemd.sh"), "--dry-run", "--python", sys.executable,
         *options],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return result.stdout


def test_the_unit_has_the_sandbox_and_resource_caps(tmp_path: Path) -> None:
    lines = set(render("--user", "--state-dir", str(tmp_path)).splitlines())
    assert lines >= HARDENING, sorted(HARDENING - lines)
    assert f"ReadWritePaths={tmp_path}" in lines  # the one writable place, under ProtectHome too


def test_systemd_analyze_rates_the_unit_exposure_3_or_better(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "moltbot-gateway.service"
    unit.write_text(render("--system", "--run-as", "moltbot", "--state-dir", str(tmp_path)))
    result = subprocess.run(
        [analyze, "security", "--offline=true", str(unit)],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    if result.returncode != 0 and match is None:
        pytest.skip(f"systemd-analyze cannot rate a unit file offline: {result.stderr.strip()}")
    assert match is not None, result.stdout
    assert float(match[1]) <= 3.0, result.stdout
    assert f"rates the unit {README_SCORE}" in (REPO / "README.md").read_text()


def mdwe_launcher(*then: str) -> tuple[str, str]:
    """Python arguments that switch on the kernel's own "refuse write+execute memory" (prctl
    PR_SET_MDWE, kept across exec: what MemoryDenyWriteExecute=yes does with a seccomp filter),
    then run Python again with `then` and the remaining arguments."""
    code = (
        "import ctypes, os, sys\n"
        "if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:\n"
        "    sys.exit('PR_SET_MDWE: ' + os.strerror(ctypes.get_errno()))\n"
        f"os.execv(sys.executable, [sys.executable, *{list(then)!r}, *sys.argv[1:]])"
    )
    return ("-c", code)


def _kernel_refuses_write_execute_memory() -> bool:
    wx_map = "import mmap; mmap.mmap(-1, 4096, prot=7)"  # PROT_READ | PROT_WRITE | PROT_EXEC
    result = subprocess.run(
        [sys.executable, *mdwe_launcher("-c", wx_map)], capture_output=True, text=True, timeout=30
    )
    return "PermissionError" in result.stderr


async def test_the_gateway_works_without_writable_executable_memory(state_dir: Path) -> None:
    if not _kernel_refuses_write_execute_memory():
        pytest.skip("this kernel cannot refuse write+execute memory (PR_SET_MDWE, Linux 6.3)")
    async with FakeOpenAI(reply="fine under MDWE") as up:
        config = {
            "gateway": {
                "auth": {"token": "mdwe-test-token-5a0c2e"},
                "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
            },
            "models": {"providers": {"up": {
                "baseUrl": up.base_url, "api": "openai-completions",
                "models": [{"id": "m1", "name": "M1"}],
            }}},
        }
        path = write_config(state_dir / "moltbot.json", config)
        args = ["gateway", "--config", str(path), "--port", str(free_port())]
        launcher = mdwe_launcher("-m", "moltbot")
        async with gateway_process(args, child_env(state_dir), launcher=launcher) as gateway:
            headers = {"Authorization": "Bearer mdwe-test-token-5a0c2e"}
            body = {"model": "moltbot", "stream": True, "user": "u",
                    "messages": [{"role": "user", "content": "hi"}]}
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{gateway.url}/v1/chat/completions", json=body, headers=headers
                ) as resp:
                    assert resp.status == 200
                    streamed = await resp.text()
                async with http.ws_connect(gateway.url.replace("http", "ws")) as ws:
                    challenge = await ws.receive_json(timeout=10)
                    assert challenge["event"] == "connect.challenge"
            assert await gateway.stop() == 0
    assert "fine under MDWE" in "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in streamed.splitlines()
        if line.startswith("data: {") and '"choices":[{' in line
    )
    assert not [e for e in gateway.log if e.get("level") in ("error", "critical")]


def test_installer_refuses_a_root_system_service(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(REPO / "scripts/install-systemd.sh"), "--dry-run", "--system",
         "--python", sys.executable, "--run-as", "root"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "should not run as root" in result.stderr


async def test_gateway_notifies_ready_and_stopping(state_dir: Path, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.setblocking(False)
        loop = asyncio.get_running_loop()
        auth = {"token": "notify-test-token-0a7e"}
        path = write_config(state_dir / "moltbot.json", {"gateway": {"auth": auth}})
        env = child_env(state_dir, {"NOTIFY_SOCKET": address})
        args = ["gateway", "--config", str(path), "--port", str(free_port())]
        async with gateway_process(args, env) as gateway:
            ready = await asyncio.wait_for(loop.sock_recv(listener, 100), 10)
            assert ready == b"READY=1"
            assert await gateway.stop() == 0
        stopping = await asyncio.wait_for(loop.sock_recv(listener, 100), 10)
        assert stopping == b"STOPPING=1"
