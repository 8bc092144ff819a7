"""The web chat page in headless Chromium against a real gateway: what a user does with it."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from playwright.async_api import Dialog, WebSocketRoute, expect

from moltbot.config.model import AgentConfig, ControlUiConfig, Identity
from tests.conftest import TOKEN, StartGateway, make_config
from tests.fake_upstreams import FakeOpenAI, provider_config
from tests.gateway.ui.conftest import PHONE, OpenPage

SLOW_CHUNKS = ["The ", "slow ", "model ", "streams ", "every ", "word."]
SLOW_TEXT = "".join(SLOW_CHUNKS)
AGENTS = (
    AgentConfig(id="main", default=True),
    AgentConfig(id="research", name="Research", identity=Identity(emoji="🔬")),
)

LAST_REPLY_JS = """() => {
  const replies = document.querySelectorAll("#messages .msg-assistant");
  const last = replies[replies.length - 1];
  return last ? {text: last.querySelector(".body").textContent,
                 streaming: last.classList.contains("streaming")} : null;
}"""


async def test_log_in_pick_an_agent_see_the_reply_stream_and_the_history_after_reload(
    start_gateway: StartGateway, open_page: OpenPage, state_dir: Path
) -> None:
    async with FakeOpenAI() as upstream:
        upstream.stream(SLOW_CHUNKS, delay=0.3)
        config = make_config(
            state_dir, providers=(provider_config(upstream),), primary="up/m1", agents=AGENTS
        )
        gateway = await start_gateway(config)
        chat = await open_page(gateway)
        await chat.open()
        await chat.log_in()
        await chat.expect_connected()
        agent = chat.page.locator("#agent")
        await expect(agent.locator("option")).to_have_text(["main", "🔬 Research"])
        await agent.select_option("research")
        await expect(chat.page.locator("#chat-title")).to_have_text("Main session")

        await chat.send("tell me something")
        await expect(chat.messages.first).to_contain_text("tell me something")
        # Part of the answer is on screen while the model is still writing it.
        partial = await chat.page.wait_for_function(
            f"""() => {{
              const reply = ({LAST_REPLY_JS})();
              return reply && reply.streaming && reply.text.length > 0
                && reply.text !== {SLOW_TEXT!r} ? reply : null;
            }}""",
            timeout=10_000,
        )
        assert SLOW_TEXT.startswith((await partial.json_value())["text"])
        await expect(chat.last_reply.locator(".text")).to_have_text(SLOW_TEXT, timeout=10_000)
        await expect(chat.last_reply).not_to_have_class("msg msg-assistant streaming")
        assert await gateway.runtime.store.get("agent:research:main") is not None

        await chat.page.reload()
        await chat.expect_connected()  # the token is still in this tab's sessionStorage
        await expect(agent).to_have_value("research")
        await expect(chat.messages).to_have_count(2)
        await expect(chat.messages.nth(0)).to_contain_text("tell me something")
        await expect(chat.messages.nth(1).locator(".text")).to_have_text(SLOW_TEXT)
        await chat.expect_no_problems()


EARLIER = {"role": "user", "content": [{"type": "text", "text": "said earlier"}]}


async def test_a_message_sent_before_the_history_arrives_stays_on_screen(
    start_gateway: StartGateway, open_page: OpenPage, state_dir: Path
) -> None:
    """Switching agents reads the new session's history; a user who sends at once must not
    see that (older) answer wipe out their message and its reply."""
    gateway = await start_gateway(make_config(state_dir, agents=AGENTS))  # the echo model
    chat = await open_page(gateway)
    history_ids: set[str] = set()
    held: list[tuple[WebSocketRoute, str | bytes]] = []

    def relay(route: WebSocketRoute) -> None:
        server = route.connect_to_server()

        def to_server(message: str | bytes) -> None:
            frame = json.loads(message)
            params = frame.get("params") or {}
            if frame.get("method") == "chat.history" and params.get("sessionKey", "").startswith(
                "agent:research:"
            ):
                history_ids.add(frame["id"])
            server.send(message)

        def to_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("id") in history_ids:
                # Answered later, after the user has sent, with one earlier message in it.
                frame["payload"]["messages"] = [EARLIER] + frame["payload"]["messages"]
                held.append((route, json.dumps(frame)))
            else:
                route.send(message)

        route.on_message(to_server)
        server.on_message(to_page)

    await chat.page.route_web_socket(re.compile(r"/ws$"), relay)
    await chat.open()
    await chat.log_in()
    await chat.expect_connected()
    await chat.page.locator("#agent").select_option("research")
    await expect(chat.page.locator("#chat-title")).to_have_text("Main session")
    for _ in range(100):  # at most 5 s
        if held:
            break
        await asyncio.sleep(0.05)
    assert held, "the page did not read the research session's history"

    await chat.send("sent at once")
    await expect(chat.last_reply.locator(".text")).to_contain_text("sent at once")
    for route, message in held:
        route.send(message)
    # The history goes in front of what was sent meanwhile.
    await expect(chat.messages).to_have_count(3)
    await expect(chat.messages.nth(0)).to_contain_text("said earlier")
    await expect(chat.messages.nth(1)).to_contain_text("sent at once")
    await expect(chat.messages.nth(2).locator(".text")).to_contain_text("sent at once")
    await chat.expect_no_problems()


async def test_the_stop_button_aborts_a_running_answer(
    start_gateway: StartGateway, open_page: OpenPage, state_dir: Path
) -> None:
    async with FakeOpenAI(reply="partial answer that never ends") as upstream:
        upstream.hang(after_chunks=2)
        config = make_config(state_dir, providers=(provider_config(upstream),), primary="up/m1")
        gateway = await start_gateway(config)
        chat = await open_page(gateway)
        await chat.open()
        await chat.log_in()
        await chat.expect_connected()
        await chat.send("go on forever")
        # Deltas are throttled (150 ms): the second may wait for the next, which never comes.
        await expect(chat.last_reply.locator(".text")).to_contain_text("partial")
        stop = chat.page.locator("#stop")
        await expect(stop).to_be_visible()
        await stop.click()
        await expect(chat.last_reply.locator(".note")).to_have_text("stopped")
        await expect(stop).to_be_hidden()
        await upstream.wait_disconnect()
        assert gateway.runtime.active_runs() == []

        await chat.page.reload()  # the transcript keeps the stopped answer, marked so
        await chat.expect_connected()
        await expect(chat.last_reply.locator(".note")).to_have_text("stopped")
        await chat.expect_no_problems()


async def test_new_session_then_delete_it(
    start_gateway: StartGateway, open_page: OpenPage, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))  # the offline echo model
    chat = await open_page(gateway)
    await chat.open()
    await chat.log_in()
    await chat.expect_connected()
    await expect(chat.sessions).to_have_count(1)
    await chat.page.locator("#new-session").click()
    await expect(chat.sessions).to_have_count(2)
    await expect(chat.page.locator("#chat-title")).to_have_text("New session")
    key = await chat.session_storage("moltbot.session")
    assert key.startswith("agent:main:webchat-")
    await chat.send("a throwaway thought")
    await expect(chat.last_reply.locator(".text")).to_contain_text("a throwaway thought")
    current = chat.page.locator(f'#sessions .session[data-key="{key}"]')
    await expect(current.locator(".session-preview")).to_contain_text("a throwaway thought")

    chat.page.once("dialog", _accept)
    await current.locator(".session-delete").click()
    await expect(chat.sessions).to_have_count(1)
    await expect(chat.page.locator("#chat-title")).to_have_text("Main session")
    assert await gateway.runtime.store.get(key) is None
    await chat.expect_no_problems()


async def test_reset_starts_the_session_afresh(
    start_gateway: StartGateway, open_page: OpenPage, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    chat = await open_page(gateway)
    await chat.open()
    await chat.log_in()
    await chat.expect_connected()
    await chat.send("remember this")
    await expect(chat.last_reply.locator(".text")).to_contain_text("remember this")
    chat.page.once("dialog", _accept)
    await chat.sessions.first.locator(".session-reset").click()
    await expect(chat.messages).to_have_count(0)
    info = await gateway.runtime.store.get("agent:main:main")
    assert info is not None and info.turns == 0


async def test_a_wrong_token_is_refused_and_not_kept(
    start_gateway: StartGateway, open_page: OpenPage, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    chat = await open_page(gateway)
    await chat.open()
    await chat.log_in("not-the-token")
    await expect(chat.page.locator("#login-error")).to_contain_text("unauthorized")
    await expect(chat.page.locator("#app")).to_be_hidden()
    assert await chat.session_storage("moltbot.secret") is None
    await chat.log_in(TOKEN)  # and the right one still works
    await chat.expect_connected()


async def test_a_token_in_the_fragment_logs_in_and_leaves_the_address_bar(
    start_gateway: StartGateway, open_page: OpenPage, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    chat = await open_page(gateway)
    await chat.open(f"/#token={TOKEN}")
    await chat.expect_connected()
    assert chat.page.url == gateway.url + "/"
    assert TOKEN not in await chat.page.evaluate("history.state + location.href")
    await chat.expect_no_problems()


async def test_replies_are_text_never_markup(
    start_gateway: StartGateway, open_page: OpenPage, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    chat = await open_page(gateway)
    await chat.open()
    await chat.log_in()
    await chat.expect_connected()
    markup = '<img src=x onerror="window.pwned=1"> <b>bold</b>'
    await chat.send(markup)
    await expect(chat.last_reply.locator(".text")).to_contain_text(markup)
    assert await chat.page.locator("#messages img, #messages b").count() == 0
    assert await chat.page.evaluate("window.pwned") is None
    await chat.expect_no_problems()


async def _accept(dialog: Dialog) -> None:
    await dialog.accept()


async def test_phone_width_and_the_keyboard_alone(
    start_gateway: StartGateway, open_page: OpenPage, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    chat = await open_page(gateway, viewport=PHONE)
    page, keyboard = chat.page, chat.page.keyboard
    await chat.open()
    await expect(page.locator("#secret")).to_be_focused()
    await keyboard.type(TOKEN)
    await keyboard.press("Enter")
    await chat.expect_connected()
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    await expect(page.locator("#message")).to_be_focused()  # where one goes next
    order = []
    for key in ["Tab"] + ["Shift+Tab"] * 5:
        await keyboard.press(key)
        order.append(await page.evaluate("document.activeElement.id"))
    # Backwards from Send. The session list is folded away at this width: its toggle instead.
    assert order == ["send", "message", "messages", "sessions-toggle", "logout", "agent"]
    for _ in range(4):
        await keyboard.press("Tab")
    await expect(page.locator("#message")).to_be_focused()
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # focus is visible
    box = await page.locator("#composer").bounding_box()
    assert box is not None and box["y"] + box["height"] <= PHONE["height"]

    await keyboard.type("typed with keys")
    await keyboard.press("Enter")
    await expect(chat.last_reply.locator(".text")).to_contain_text("typed with keys")

    for _ in range(2):
        await keyboard.press("Shift+Tab")
    await expect(page.locator("#sessions-toggle")).to_be_focused()
    await keyboard.press("Enter")
    await expect(page.locator("#sidebar")).to_be_visible()
    await expect(page.locator("#sessions-toggle")).to_have_attribute("aria-expanded", "true")
    await keyboard.press("Shift+Tab")  # the list comes before the chat
    await expect(page.locator(".session-reset")).to_be_focused()
    for _ in range(2):
        await keyboard.press("Shift+Tab")
    await expect(page.locator("#new-session")).to_be_focused()
    await keyboard.press("Enter")
    await expect(chat.sessions).to_have_count(2)
    await expect(page.locator("#message")).to_be_focused()
    await chat.expect_no_problems()


async def test_the_page_under_a_base_path(
    start_gateway: StartGateway, open_page: OpenPage, state_dir: Path
) -> None:
    config = make_config(state_dir, control_ui=ControlUiConfig(base_path="/chat"))
    gateway = await start_gateway(config)
    chat = await open_page(gateway)
    await chat.open("/chat")  # redirected to /chat/, whose socket is /chat/ws
    await chat.log_in()
    await chat.expect_connected()
    assert chat.page.url == gateway.url + "/chat/"
    await chat.send("under a prefix")
    await expect(chat.last_reply.locator(".text")).to_contain_text("under a prefix")
    await chat.expect_no_problems()


# Messages of the shapes structured turns bring (issue 9), put into the real gateway's
# chat.history answer on its way to the page: the page must show each block by its type.
STRUCTURED = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image", "mimeType": "image/png"},
        ],
    },
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me read the notes."},
            # Arguments as the JSON text the gateway sends.
            {"type": "toolCall", "id": "call_1", "name": "read", "arguments": '{"path":"n.txt"}'},
            {"type": "thinking", "thinking": "hidden"},
        ],
    },
    {
        "role": "toolResult",
        "toolCallId": "call_1",  # no toolName: the page finds it from the call
        "content": [{"type": "text", "text": "<b>not bold</b>"}],
        "isError": False,
    },
    {
        "role": "toolResult",
        "toolCallId": "call_2",
        "toolName": "exec",
        "content": [{"type": "text", "text": "permission denied"}],
        "isError": True,
    },
]


async def test_content_blocks_show_by_type(
    start_gateway: StartGateway, open_page: OpenPage, state_dir: Path
) -> None:
    gateway = await start_gateway(make_config(state_dir))
    chat = await open_page(gateway)

    def relay(route: WebSocketRoute) -> None:
        server = route.connect_to_server()

        def to_page(message: str | bytes) -> None:
            frame = json.loads(message)
            payload = frame.get("payload")
            if frame.get("type") == "res" and isinstance(payload, dict) and "messages" in payload:
                payload["messages"] = payload["messages"] + STRUCTURED
                message = json.dumps(frame)
            route.send(message)

        server.on_message(to_page)

    await chat.page.route_web_socket(re.compile(r"/ws$"), relay)
    await chat.open()
    await chat.log_in()
    await chat.expect_connected()
    await expect(chat.messages).to_have_count(4)
    user, assistant, result, failed = (chat.messages.nth(i) for i in range(4))
    await expect(user.locator(".badge")).to_have_text("image (image/png)")
    call = assistant.locator("details.tool-call")
    await expect(call.locator("summary")).to_have_text("Tool call: read")
    await call.locator("summary").click()
    await expect(call.locator("pre")).to_have_text('{\n  "path": "n.txt"\n}')
    await expect(assistant.locator(".badge")).to_have_text("thinking")
    await expect(result.locator("summary")).to_have_text("read result")
    await result.locator("summary").click()
    await expect(result.locator(".text")).to_have_text("<b>not bold</b>")
    await expect(failed.locator("details.error summary")).to_have_text("exec result (error)")
    assert await chat.page.locator("#messages b").count() == 0
    await chat.expect_no_problems()
