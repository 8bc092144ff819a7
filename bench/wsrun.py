"""Scenario (f) from the runner's side: the gateway's RSS before and with N idle WS clients.

The clients live in their own process (`bench.ws_idle`), so only the gateway's memory is
measured. The baseline is taken after the client's probe connection came and went, so code
paths loaded on first use are not charged to the connections.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from typing import TYPE_CHECKING, Any

from bench.procs import status_kb

if TYPE_CHECKING:
    from bench.gateway import Gateway
    from bench.runner import Bench

SETTLE_SECONDS = 2.0
OPEN_TIMEOUT = 120.0


async def steady_rss_kb(pid: int, samples: int = 5) -> float:
    """The median of a few VmRSS readings, so a passing spike does not count."""
    readings = []
    for _ in range(samples):
        readings.append(status_kb(pid, "VmRSS"))
        await asyncio.sleep(0.1)
    return statistics.median(readings)


async def measure_ws(bench: Bench, gateway: Gateway) -> dict[str, Any]:
    count = bench.options.ws_count
    url = gateway.url.replace("http://", "ws://", 1) + "/"
    client = await bench.kids.start_python(
        "ws-clients",
        ["bench.ws_idle", "--url", url, "--token", gateway.setup.token, "--count", str(count)],
    )
    try:
        return await _drive(client, gateway, count)
    finally:
        await bench.kids.stop(client, timeout=10)


async def _drive(client: Any, gateway: Gateway, count: int) -> dict[str, Any]:
    probed = json.loads(await client.read_line(OPEN_TIMEOUT) or "{}")
    if not probed.get("probed"):
        reason = probed.get("skipped", f"no answer from the WS client: {probed}")
        print(f"  (f) skipped: {reason}", flush=True)
        return {"skipped": reason}
    await asyncio.sleep(SETTLE_SECONDS)
    base_kb = await steady_rss_kb(gateway.pid)
    client.write_line("open")
    first = json.loads(await client.read_line(OPEN_TIMEOUT) or "{}")
    if "connected" not in first:
        return {"skipped": f"WS client failed: {first}"}
    await asyncio.sleep(SETTLE_SECONDS)
    with_clients = await steady_rss_kb(gateway.pid)
    client.write_line("release")
    await client.read_line(30)
    connected = int(first["connected"])
    per_conn = (with_clients - base_kb) / max(1, connected)
    result = {
        "connected": connected,
        "failed": int(first.get("failed", 0)),
        "failures": first.get("samples", []),
        "rss_before_mb": base_kb / 1024,
        "rss_with_clients_mb": with_clients / 1024,
        "kb_per_connection": per_conn,
        "requested": count,
    }
    print(
        f"  (f) {connected}/{count} idle WS connections: {per_conn:.1f} KB each "
        f"({base_kb / 1024:.1f} -> {with_clients / 1024:.1f} MB)",
        flush=True,
    )
    return result
