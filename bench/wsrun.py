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
    half, half_kb = await _step(client, gateway)
    full, full_kb = await _step(client, gateway)
    if half is None or full is None:
        return {"skipped": "WS client failed while connecting"}
    connected = int(full["connected"])
    per_conn = (full_kb - base_kb) / max(1, connected)
    marginal = (full_kb - half_kb) / max(1, connected - int(half["connected"]))
    result = {
        "connected": connected,
        "failed": int(full.get("failed", 0)),
        "failures": full.get("samples", []),
        "rss_before_mb": base_kb / 1024,
        "rss_half_mb": half_kb / 1024,
        "rss_with_clients_mb": full_kb / 1024,
        "kb_per_connection": per_conn,
        "kb_per_connection_second_half": marginal,
        "requested": count,
    }
    print(
        f"  (f) {connected}/{count} idle WS connections: {per_conn:.1f} KB each "
        f"({base_kb / 1024:.1f} -> {full_kb / 1024:.1f} MB; second half {marginal:.1f} KB each)",
        flush=True,
    )
    return result


async def _step(client: Any, gateway: Gateway) -> tuple[dict[str, Any] | None, float]:
    """Wait for the client to report a step's connections, read RSS, let it go on."""
    report = json.loads(await client.read_line(OPEN_TIMEOUT) or "{}")
    if "connected" not in report:
        return None, 0.0
    await asyncio.sleep(SETTLE_SECONDS)
    rss = await steady_rss_kb(gateway.pid)
    client.write_line("next")
    return report, rss
