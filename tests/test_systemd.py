"""systemd integration: the unit the installer renders, and sd_notify from a real gateway."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from pathlib import Path

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
