"""The top-level `env` block and `${VAR}` substitution in string values.

Both work on a copy of the environment: the loader never touches `os.environ`, the CLI decides
whether to export the result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from moltbot.config.wording import join_index, join_key, shown_path

VAR_REFERENCE = re.compile(r"(?P<escape>\$?)\$\{(?P<name>[A-Z_][A-Z0-9_]*)\}")


def apply_env_block(raw: object, env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` plus the string entries of `raw["env"]` (and `raw["env"]["vars"]`) for
    variables that are unset or blank. Malformed entries are skipped here; validation reports them.
    """
    merged = dict(env)
    block = raw.get("env") if isinstance(raw, dict) else None
    if not isinstance(block, dict):
        return merged
    nested = block.get("vars")
    entries = [*block.items(), *(nested.items() if isinstance(nested, dict) else ())]
    for name, value in entries:
        if isinstance(name, str) and isinstance(value, str) and not merged.get(name, "").strip():
            merged[name] = value
    return merged


def substitute_env(value: object, env: Mapping[str, str]) -> tuple[object, list[str]]:
    """`value` with `${NAME}` replaced in every string, and one problem line per missing or empty
    variable (`missing env var "NAME" referenced at config path: a.b[0].c`)."""
    problems: list[str] = []
    return _walk(value, env, "", problems), problems


def _walk(value: object, env: Mapping[str, str], where: str, problems: list[str]) -> object:
    if isinstance(value, str):
        return _substitute(value, env, where, problems)
    if isinstance(value, dict):
        return {
            key: _walk(item, env, join_key(where, key), problems) for key, item in value.items()
        }
    if isinstance(value, list):
        return [_walk(item, env, join_index(where, i), problems) for i, item in enumerate(value)]
    return value


def _substitute(text: str, env: Mapping[str, str], where: str, problems: list[str]) -> str:
    shown = shown_path(where)

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if match["escape"]:
            return "${" + name + "}"  # `$${NAME}` is how a literal `${NAME}` is written
        resolved = env.get(name, "")
        if not resolved:
            problems.append(f'missing env var "{name}" referenced at config path: {shown}')
        return resolved

    return VAR_REFERENCE.sub(replace, text)


def escape_env_refs(text: str) -> str:
    """`text` written so that substitution gives it back unchanged (for generated files)."""
    return VAR_REFERENCE.sub(lambda match: "$" + match[0], text)
