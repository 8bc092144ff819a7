"""An agent's bootstrap files are read off the loop and cached briefly; turns that arrive
together while the cache is empty share one read."""

from __future__ import annotations

import asyncio
from pathlib import Path

from moltbot.agents.prompt import WorkspaceFiles


async def test_turns_arriving_together_share_one_read(tmp_path: Path) -> None:
    (tmp_path / "AGENTS.md").write_text("Be brief.\n", encoding="utf-8")
    files = WorkspaceFiles(max_chars=10_000)
    reads = 0
    read = files._read

    def counting_read(workspace: Path) -> tuple[tuple[str, str], ...]:
        nonlocal reads
        reads += 1
        return read(workspace)

    files._read = counting_read  # type: ignore[method-assign]
    results = await asyncio.gather(*(files.load(tmp_path) for _ in range(50)))
    assert reads == 1
    assert all(r == (("AGENTS.md", "Be brief."),) for r in results)
    assert await files.load(tmp_path) == results[0] and reads == 1  # cached


async def test_a_cancelled_waiter_leaves_the_read_to_the_others(tmp_path: Path) -> None:
    (tmp_path / "AGENTS.md").write_text("Be brief.\n", encoding="utf-8")
    files = WorkspaceFiles(max_chars=10_000)
    first = asyncio.ensure_future(files.load(tmp_path))
    second = asyncio.ensure_future(files.load(tmp_path))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == (("AGENTS.md", "Be brief."),)
