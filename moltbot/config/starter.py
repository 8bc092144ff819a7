"""The first config a user gets (`moltbot setup` / `make run`), and writing it safely."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from moltbot.config.envsubst import escape_env_refs
from moltbot.config.errors import ConfigError

_STARTER = """\
// Moltbot gateway config. JSON5: comments, unquoted keys and trailing commas are fine.
// moltbot.json5.example in the source tree documents every key.
{
  gateway: {
    mode: "local",
    port: 18789,
    // "loopback" only accepts connections from this machine; "lan" listens on all interfaces.
    bind: "loopback",
    auth: {
      mode: "token",
      // Clients present this as a bearer token. `moltbot config show` prints it as "***".
      token: __TOKEN__,
    },
    http: {
      // The OpenAI-compatible API on the same port: POST /v1/chat/completions and
      // POST /v1/responses (the Responses API).
      endpoints: { chatCompletions: { enabled: __CHAT__ }, responses: { enabled: __CHAT__ } },
    },
  },

  // No providers yet, so agents answer with the offline "builtin/echo" model.
  // To use an OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, ...), uncomment this,
  // set baseUrl (including /v1) and the model ids it serves, and export the key variable:
  //
  // models: {
  //   providers: {
  //     openai: {
  //       baseUrl: "https://api.openai.com/v1",
  //       apiKey: "${OPENAI_API_KEY}",
  //       api: "openai-completions",
  //       models: [{ id: "gpt-4o-mini", name: "GPT-4o mini" }],
  //     },
  //   },
  // },
  // agents: { defaults: { model: { primary: "openai/gpt-4o-mini" } } },
}
"""


def starter_config(token: str, *, chat_completions: bool) -> str:
    """JSON5 text of a working local config using `token`; no providers (echo model).
    `chat_completions` turns on both OpenAI-compatible endpoints."""
    if not token.strip():
        raise ValueError("starter_config needs a non-empty token")
    # json.dumps makes any token a valid JSON5 string; escaping keeps `${...}` in it literal.
    quoted_token = json.dumps(escape_env_refs(token))
    text = _STARTER.replace("__CHAT__", "true" if chat_completions else "false")
    return text.replace("__TOKEN__", quoted_token)


def write_new_config(path: Path, text: str) -> None:
    """Create `path` with `text` (dir 0700, file 0600), never replacing an existing file."""
    path = Path(path)
    if path.exists():
        raise _already_exists(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomically(path, text)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot write config at {path}: {reason}", path=path) from None


def _write_atomically(path: Path, text: str) -> None:
    """Readers never see half a file: write a private temp file, then publish it in one step."""
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        temp.chmod(0o600)
        _publish(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _publish(temp: Path, path: Path) -> None:
    # A hard link fails if `path` appeared since the check above, so a file written concurrently
    # is never clobbered; filesystems without hard links fall back to a plain rename.
    try:
        os.link(temp, path)
    except FileExistsError:
        raise _already_exists(path) from None
    except OSError:
        os.replace(temp, path)


def _already_exists(path: Path) -> ConfigError:
    return ConfigError(f"config already exists at {path}; not overwriting", path=path)
