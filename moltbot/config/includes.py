"""`$include` directives: splice other config files into the parsed tree.

`{"$include": "a.json5"}` is replaced by that file's content; a list of paths is deep-merged left to
right; keys next to `$include` are merged over the included object. Paths are relative to the
file that contains the directive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moltbot.config.errors import ConfigError
from moltbot.config.files import read_config_file
from moltbot.config.wording import join_index, join_key, shown_path, type_name

INCLUDE_KEY = "$include"
MAX_INCLUDE_DEPTH = 10


@dataclass(frozen=True)
class _Chain:
    """The files being expanded, outermost first; the last one contains the current directive."""

    files: tuple[Path, ...]
    # The top-level config path as the user gave it; every error is raised against it.
    root: Path
    # Every file read so far, shared along the whole expansion (the caller's list).
    read: list[Path]

    @property
    def current(self) -> Path:
        return self.files[-1]

    def shown(self, path: Path) -> str:
        """Paths in messages are relative to the top-level config's directory when possible."""
        try:
            return str(path.relative_to(self.files[0].parent))
        except ValueError:
            return str(path)

    def render(self, extra: Path) -> str:
        return " -> ".join(self.shown(path) for path in (*self.files, extra))

    def fail(self, where: str, detail: str) -> ConfigError:
        location = f"$include in {self.shown(self.current)} at {shown_path(where)}"
        return ConfigError.file_level(self.root, f"{location}: {detail}")


def resolve_includes(value: object, *, file: Path, read: list[Path] | None = None) -> object:
    """`value` (parsed from `file`) with every `$include`, at any depth, expanded; the paths
    of the included files are appended to `read`, in the order they were read."""
    chain = _Chain(files=(file.resolve(),), root=file, read=[] if read is None else read)
    return _walk(value, chain, where="")


def deep_merge(base: object, over: object) -> object:
    """Objects merge key by key, arrays concatenate, anything else: `over` wins."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = deep_merge(merged[key], value) if key in merged else value
        return merged
    if isinstance(base, list) and isinstance(over, list):
        return base + over
    return over


def _walk(value: object, chain: _Chain, where: str) -> object:
    if isinstance(value, dict):
        if INCLUDE_KEY in value:
            return _expand(value, chain, where)
        return {key: _walk(item, chain, join_key(where, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_walk(item, chain, join_index(where, index)) for index, item in enumerate(value)]
    return value


def _expand(directive: dict[str, object], chain: _Chain, where: str) -> object:
    included = _load_targets(directive[INCLUDE_KEY], chain, where)
    siblings = {key: value for key, value in directive.items() if key != INCLUDE_KEY}
    if not siblings:
        return included
    if not isinstance(included, dict):
        detail = f"keys next to {INCLUDE_KEY} need an included object, got {type_name(included)}"
        raise chain.fail(where, detail)
    return deep_merge(included, _walk(siblings, chain, where))


def _load_targets(target: object, chain: _Chain, where: str) -> object:
    here = join_key(where, INCLUDE_KEY)
    if isinstance(target, str):
        return _load_one(target, chain, here)
    if not isinstance(target, list):
        detail = f"expected a file path or a list of file paths, got {type_name(target)}"
        raise chain.fail(here, detail)
    merged: object = {}
    for index, item in enumerate(target):
        if not isinstance(item, str):
            detail = f"expected a file path (string), got {type_name(item)}"
            raise chain.fail(join_index(here, index), detail)
        merged = deep_merge(merged, _load_one(item, chain, join_index(here, index)))
    return merged


def _load_one(target: str, chain: _Chain, where: str) -> object:
    path = (chain.current.parent / target).resolve()
    if path in chain.files:
        raise ConfigError.file_level(chain.root, f"include cycle: {chain.render(path)}")
    if len(chain.files) > MAX_INCLUDE_DEPTH:
        detail = f"includes nested deeper than {MAX_INCLUDE_DEPTH} levels: {chain.render(path)}"
        raise ConfigError.file_level(chain.root, detail)
    if not path.exists():
        raise chain.fail(where, f"cannot read {chain.shown(path)}: file not found")
    parsed = read_config_file(path, shown_as=chain.shown(path), report_as=chain.root)
    chain.read.append(path)
    inner = _Chain(files=(*chain.files, path), root=chain.root, read=chain.read)
    return _walk(parsed, inner, where="")
