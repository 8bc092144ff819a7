"""`python -m moltbot ...` / `moltbot ...`: the command-line entry points.

Every subcommand is a small function; failures print one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Sequence
from typing import NoReturn
from urllib.parse import quote

from moltbot import __version__
from moltbot.config import (
    ConfigError,
    LoadedConfig,
    load_config,
    redacted,
    starter_config,
    write_new_config,
)
from moltbot.config.paths import resolve_config_path
from moltbot.config.validate import MAX_WORKERS
from moltbot.logs import configure_logging

EXIT_USAGE = 2


class CliError(Exception):
    """A one-line message for the user; exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        raise CliError(f"{self.prog}: {message}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):
            parser.print_help()
            return EXIT_USAGE
        return args.func(args)
    except (CliError, ConfigError) as exc:
        print(f"moltbot: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _one_line(exc: Exception) -> str:
    """ConfigError may list several problems; keep them, joined on one line."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="moltbot", description="Moltbot agent gateway")
    parser.add_argument("--version", action="version", version=f"moltbot {__version__}")
    commands = parser.add_subparsers(title="commands", parser_class=_Parser)

    gateway = commands.add_parser("gateway", help="run the gateway (WebSocket + HTTP on one port)")
    _add_config_args(gateway, serve=True)
    gateway.set_defaults(func=cmd_gateway)

    dev = commands.add_parser("dev", help="run the gateway on a dev config (created on first run)")
    _add_config_args(dev, serve=True)
    dev.set_defaults(func=cmd_dev)

    setup = commands.add_parser("setup", help="write a starter config with a random token")
    setup.add_argument("--config", help="where to write it (default: the config path)")
    setup.add_argument(
        "--enable-http",
        action="store_true",
        help="enable the OpenAI-compatible endpoints (/v1/chat/completions, /v1/responses)",
    )
    setup.set_defaults(func=cmd_setup)

    config = commands.add_parser("config", help="check or print the effective config")
    config_commands = config.add_subparsers(title="config commands", parser_class=_Parser)
    validate = config_commands.add_parser("validate", help="load and validate; exit 2 on errors")
    _add_config_args(validate)
    validate.set_defaults(func=cmd_config_validate)
    show = config_commands.add_parser("show", help="print the effective config, secrets redacted")
    _add_config_args(show)
    show.set_defaults(func=cmd_config_show)
    # The WebSocket client commands (`agent`, `health`) live in their own module, which uses
    # CliError from this one: hence the import here rather than at the top.
    from moltbot import cli_client

    cli_client.register(commands)
    return parser


def _add_config_args(parser: argparse.ArgumentParser, *, serve: bool = False) -> None:
    parser.add_argument("--config", help="config file (JSON5 or YAML)")
    if serve:
        parser.add_argument("--port", type=_port, help="listen port (default 18789)")
        parser.add_argument("--bind", help='"loopback", "lan" or an IP address')
        parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
        parser.add_argument(
            "--workers",
            type=_workers,
            help="worker processes on the one port (default 1; more need the postgres store)",
        )


def _workers(text: str) -> int:
    try:
        workers = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= workers <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_WORKERS} workers, got {workers}")
    return workers


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def load(args: argparse.Namespace) -> LoadedConfig:
    loaded = load_config(
        config_path=args.config,
        port=getattr(args, "port", None),
        bind=getattr(args, "bind", None),
        workers=getattr(args, "workers", None),
    )
    # The config's `env` block may define variables (e.g. provider keys) for this process.
    for name, value in loaded.env.items():
        os.environ.setdefault(name, value)
    return loaded


# -- commands ----------------------------------------------------------------------------------


def cmd_gateway(args: argparse.Namespace) -> int:
    from moltbot.gateway import loop
    from moltbot.gateway.server import serve, startup_failure
    from moltbot.gateway.workers import supervise

    loaded = load(args)
    config = loaded.config
    level = "debug" if args.verbose else config.logging.level
    configure_logging(level, config.logging.format)
    _log_notices(loaded)

    async def serve_one(loop_name: str) -> None:
        await serve(config, loop_name=loop_name)

    try:
        if config.gateway.workers > 1:
            return supervise(config, level, config.logging.format)
        loop.run(serve_one, config.gateway.event_loop)
    except Exception as exc:
        message = startup_failure(config, exc)
        if message is None:
            raise
        raise CliError(message) from None
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    path, _ = resolve_config_path(args.config, os.environ)
    if not path.exists():
        write_new_config(path, starter_config(secrets.token_urlsafe(24), chat_completions=True))
        print(f"wrote a dev config to {path}")
    loaded = load(args)
    _print_banner(loaded)
    return cmd_gateway(args)


def _print_banner(loaded: LoadedConfig) -> None:
    gateway = loaded.config.gateway
    url = f"http://{gateway.client_host}:{gateway.port}"
    secret = gateway.auth.secret or "<none>"
    body = '{"model":"moltbot","messages":[{"role":"user","content":"Hello, Moltbot"}]}'
    # The token in the fragment, which browsers never send; the page takes it out of the bar.
    chat = (
        f"  chat:   {url}{gateway.control_ui.base_path}/#token={quote(secret, safe='')}\n"
        if gateway.control_ui.enabled and gateway.auth.mode == "token" and gateway.auth.secret
        else ""
    )
    print(
        f"Moltbot gateway {__version__}\n  config: {loaded.config.config_path}\n"
        f"  URL:    {url}\n  token:  {secret}\n{chat}  try:\n"
        f"    curl -sS {url}/v1/chat/completions -H 'Authorization: Bearer {secret}' "
        f"-H 'Content-Type: application/json' -d '{body}'\n",
        flush=True,
    )


def cmd_setup(args: argparse.Namespace) -> int:
    path, _ = resolve_config_path(args.config, os.environ)
    token = secrets.token_urlsafe(24)
    write_new_config(path, starter_config(token, chat_completions=args.enable_http))
    print(f"wrote {path}\ngateway token: {token}")
    return 0


def cmd_config_validate(args: argparse.Namespace) -> int:
    loaded = load(args)
    print(f"config ok: {loaded.config.config_path}")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    loaded = load(args)
    print(json.dumps(redacted(loaded.config), indent=2))
    return 0


def _log_notices(loaded: LoadedConfig) -> None:
    from moltbot.logs import get_logger

    log = get_logger("moltbot.config")
    log.info("config loaded", path=str(loaded.config.config_path))
    for notice in loaded.notices:
        log.warning(notice)
