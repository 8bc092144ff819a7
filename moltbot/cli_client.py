"""`moltbot agent` and `moltbot health`: CLI commands that talk to a running gateway over WS.

The URL defaults to `ws://127.0.0.1:<gateway.port>` and the secret to the config's token or
password (which `MOLTBOT_GATEWAY_TOKEN` / `_PASSWORD` fill in), both from `load_config`.
Failures print one line on stderr: exit 2 for usage, connection and auth problems, 1 when the
agent run itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp

from moltbot.cli import CliError
from moltbot.cli_approvals import Approver, approval_mode
from moltbot.client import Event, GatewayClient, GatewayClosed, GatewayError

DEFAULT_AGENT_TIMEOUT = 600
# Time on top of the run's own timeout for the gateway to answer.
ANSWER_MARGIN_SECONDS = 30.0
EXIT_RUN_FAILED = 1


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    token: str | None
    password: str | None


def register(commands: argparse._SubParsersAction) -> None:
    agent = commands.add_parser("agent", help="run one agent turn through the gateway")
    agent.add_argument("--message", "-m", required=True, help="what to say")
    agent.add_argument("--agent", dest="agent_id", help="agent id (default: the default agent)")
    agent.add_argument("--session-key", help="session key (default: the agent's main session)")
    agent.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_AGENT_TIMEOUT,
        help=f"run timeout in seconds (default {DEFAULT_AGENT_TIMEOUT})",
    )
    answers = agent.add_mutually_exclusive_group()
    answers.add_argument(
        "--approve", action="store_true", help="allow every command of this run that needs approval"
    )
    answers.add_argument(
        "--deny", action="store_true", help="deny every command of this run that needs approval"
    )
    _add_target_args(agent)
    agent.set_defaults(func=cmd_agent)

    health = commands.add_parser("health", help="print the gateway's health summary as JSON")
    health.add_argument("--probe", action="store_true", help="refresh instead of a cached copy")
    health.add_argument("--timeout", type=_seconds, default=30, help="seconds to wait")
    _add_target_args(health)
    health.set_defaults(func=cmd_health)


def _add_target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="gateway WebSocket URL (default ws://127.0.0.1:<port>)")
    parser.add_argument("--token", help="gateway token (default: config / MOLTBOT_GATEWAY_TOKEN)")
    parser.add_argument("--password", help="gateway password, when the gateway uses one")
    parser.add_argument("--config", help="config file to read the defaults from")


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {value}")
    return value


def resolve_target(args: argparse.Namespace) -> Target:
    """Flags first; the config (file and env) only for what they leave open."""
    if args.url and (args.token or args.password):
        return Target(args.url, args.token, args.password)
    from moltbot.config import load_config

    config = load_config(config_path=args.config).config
    gateway = config.gateway
    host = gateway.client_host
    host = f"[{host}]" if ":" in host else host
    url = args.url or f"ws://{host}:{gateway.port}"
    if args.token or args.password:
        return Target(url, args.token, args.password)
    auth = gateway.auth
    return Target(url, auth.token if auth.mode == "token" else None, auth.password)


# -- commands ---------------------------------------------------------------------------------


def cmd_agent(args: argparse.Namespace) -> int:
    return asyncio.run(run_agent(args, resolve_target(args), sys.stdout))


def cmd_health(args: argparse.Namespace) -> int:
    return asyncio.run(run_health(args, resolve_target(args), sys.stdout))


async def run_health(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    client = await _connect(target)
    try:
        params = {"probe": True} if args.probe else {}
        result = await _ask(client.request("health", params, timeout=args.timeout))
    finally:
        await client.close()
    print(json.dumps(result, indent=2), file=out)
    return 0


async def run_agent(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    params: dict[str, Any] = {
        "message": args.message,
        "idempotencyKey": str(uuid.uuid4()),
        "timeout": args.timeout,
    }
    if args.agent_id:
        params["agentId"] = args.agent_id
    if args.session_key:
        params["sessionKey"] = args.session_key
    printer = ReplyPrinter(params["idempotencyKey"], out)
    client = await _connect(target)
    mode = approval_mode(args.approve, args.deny, interactive=sys.stdin.isatty())
    approver = Approver(client, params["idempotencyKey"], mode)
    try:
        final = client.start("agent", params, expect_final=True)
        async with asyncio.timeout(args.timeout + ANSWER_MARGIN_SECONDS):
            result = await _stream_until(client, final, printer, approver)
    except TimeoutError:
        raise CliError("no answer from the gateway in time") from None
    except GatewayError as exc:
        printer.break_line()
        if exc.code == "UNAVAILABLE":  # the run started and failed
            print(f"moltbot: agent run failed: {exc.message}", file=sys.stderr)
            return EXIT_RUN_FAILED
        raise CliError(exc.message) from None
    except GatewayClosed as exc:
        raise CliError(f"gateway closed the connection: {exc.reason or exc.code}") from None
    finally:
        await approver.close()
        await client.close()
    printer.finish(_final_text(result))
    meta = (result.get("result") or {}).get("meta") or {} if isinstance(result, dict) else {}
    if meta.get("aborted"):
        print(
            f"moltbot: agent run aborted ({meta.get('abortReason') or 'aborted'})", file=sys.stderr
        )
        return EXIT_RUN_FAILED
    return 0


async def _stream_until(
    client: GatewayClient, final: asyncio.Future[Any], printer: ReplyPrinter, approver: Approver
) -> Any:
    """Print the run's text as its events arrive (and answer its approvals), until the final
    answer."""
    while not final.done():
        next_event = asyncio.ensure_future(client.next_event())
        await asyncio.wait({next_event, final}, return_when=asyncio.FIRST_COMPLETED)
        if not next_event.done():
            next_event.cancel()
            break
        event = next_event.result()
        if event is None:  # closed: `final` fails with GatewayClosed
            break
        printer.show(event)
        approver.show(event)
    for event in client.queued_events():
        printer.show(event)
    return await final


def _final_text(result: Any) -> str | None:
    try:
        payloads = result["result"]["payloads"]
    except (KeyError, TypeError):
        return None
    return "".join(p.get("text") or "" for p in payloads)


class ReplyPrinter:
    """Writes a run's assistant text as it grows: each event carries the new text (`delta`).
    The final answer is compared with what was printed, and whatever is missing follows."""

    def __init__(self, run_id: str, out: TextIO) -> None:
        self._run_id = run_id
        self._out = out
        self._printed = ""

    def show(self, event: Event) -> None:
        payload = event.payload if isinstance(event.payload, dict) else {}
        if event.name != "agent" or payload.get("runId") != self._run_id:
            return
        if payload.get("stream") == "assistant":
            delta = payload.get("data", {}).get("delta")
            if isinstance(delta, str):
                self._write(self._printed + delta)

    def finish(self, text: str | None) -> None:
        if text:
            self._write(text)
        self._out.write("\n")
        self._out.flush()

    def break_line(self) -> None:
        """End a partly printed reply before an error message."""
        if self._printed:
            self._out.write("\n")
            self._out.flush()

    def _write(self, text: str) -> None:
        if text.startswith(self._printed) and len(text) > len(self._printed):
            self._out.write(text[len(self._printed) :])
            self._out.flush()
            self._printed = text


# -- connecting -------------------------------------------------------------------------------


async def _connect(target: Target) -> GatewayClient:
    try:
        return await GatewayClient.connect(target.url, token=target.token, password=target.password)
    except GatewayError as exc:
        raise CliError(f"gateway refused the connection: {exc.message}") from None
    except GatewayClosed as exc:
        raise CliError(f"gateway closed the connection: {exc.reason or exc.code}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise CliError(f"cannot connect to {target.url}: {_reason(exc)}") from None
    except TimeoutError:
        raise CliError(f"cannot connect to {target.url}: timed out") from None


async def _ask(request: Any) -> Any:
    try:
        return await request
    except GatewayError as exc:
        raise CliError(exc.message) from None
    except GatewayClosed as exc:
        raise CliError(f"gateway closed the connection: {exc.reason or exc.code}") from None
    except TimeoutError:
        raise CliError("no answer from the gateway in time") from None


def _reason(exc: BaseException) -> str:
    os_error = getattr(exc, "os_error", exc)
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused (is the gateway running?)"
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror.lower()
    return " ".join(str(exc).split()) or exc.__class__.__name__
