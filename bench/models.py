"""Upstream model ids that encode the answer's shape, shared by the upstream and the config.

`fast` is one short delta; `chunks16` sixteen deltas at once; `chunks16-delay20` sixteen deltas
20 ms apart (the first at once). The gateway config maps one agent to each model it uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CHUNKS = re.compile(r"^chunks(\d{1,4})(?:-delay(\d{1,5}))?$")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    chunks: int
    delay_ms: int


def model_spec(model: str) -> ModelSpec | None:
    """The answer shape named by `model`, or None for an unknown id."""
    if model == "fast":
        return ModelSpec(chunks=1, delay_ms=0)
    match = _CHUNKS.match(model)
    if match is None:
        return None
    return ModelSpec(chunks=max(1, int(match[1])), delay_ms=int(match[2] or 0))


def delta_text(index: int) -> str:
    """The text of delta `index`: short, like one token of a real model."""
    return f"tok{index} "
