"""Images from `data:` URLs on /v1/chat/completions: to an OpenAI upstream as image_url parts,
to an Anthropic upstream as base64 image blocks, refused for a text-only model."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from moltbot.client import GatewayClient
from tests.conftest import TOKEN, StartGateway, make_config
from tests.fake_upstreams import FakeAnthropic, FakeOpenAI
from tests.gateway.http.helpers import WAIT, user
from tests.gateway.http.sdk import MODES, Mode, ask
from tests.images import IMAGES, b64, data_url, image_part, vision_config

TYPES = list(IMAGES)


@pytest.mark.parametrize("mode", MODES)
async def test_data_url_images_reach_an_openai_upstream(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, mode: Mode
) -> None:
    gateway = await start_gateway(vision_config(state_dir, up))
    up.stream(["Four", " images."])
    urls = [data_url(t) for t in TYPES]
    content = [{"type": "text", "text": "What is in these?"}]
    content += [image_part(urls[0], detail="low"), *(image_part(u) for u in urls[1:])]
    answer = await ask(gateway, mode, messages=[user(content)])
    assert answer.content == "Four images."
    last = up.requests[0].messages[-1]
    assert last == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in these?"},
            *({"type": "image_url", "image_url": {"url": u}} for u in urls),
        ],
    }
    assert up.refusals == []


@pytest.mark.parametrize("mode", ["async-stream", "sync"])
async def test_data_url_images_reach_an_anthropic_upstream(
    start_gateway: StartGateway, state_dir: Path, mode: Mode
) -> None:
    async with FakeAnthropic() as up:
        gateway = await start_gateway(vision_config(state_dir, up))
        content = [*(image_part(data_url(t)) for t in TYPES), {"type": "text", "text": "Which?"}]
        answer = await ask(gateway, mode, messages=[user(content)])
        assert answer.content == "Hello from fake upstream"
        [message] = up.requests[0].messages
        assert message == {
            "role": "user",
            "content": [
                *(
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": t, "data": b64(IMAGES[t])},
                    }
                    for t in TYPES
                ),
                {"type": "text", "text": "Which?"},
            ],
        }
        assert up.refusals == []


async def test_an_image_in_an_earlier_message_reaches_the_model(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    """A client sends the whole chat: the image of an earlier turn is still an image."""
    gateway = await start_gateway(vision_config(state_dir, up))
    url = data_url("image/png")
    messages = [
        user([{"type": "text", "text": "Look"}, image_part(url)]),
        {"role": "assistant", "content": "A red pixel."},
        user("What colour again?"),
    ]
    await ask(gateway, "async", messages=messages)
    convo = [m for m in up.requests[0].messages if m["role"] != "system"]
    assert convo == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        },
        {"role": "assistant", "content": "A red pixel."},
        {"role": "user", "content": "What colour again?"},
    ]


@pytest.mark.parametrize("mode", ["async", "sync-stream"])
async def test_a_text_only_model_refuses_images_with_a_400(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI, mode: Mode
) -> None:
    gateway = await start_gateway(vision_config(state_dir, up, images=False))
    content = [{"type": "text", "text": "see"}, image_part(data_url("image/jpeg"))]
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(gateway, mode, messages=[user(content)])
    error = caught.value
    assert error.status_code == 400
    assert error.param == "messages"
    assert error.code == "image_input_unsupported"
    assert "up/m1" in error.message and "image" in error.message
    assert up.requests == []
    # Text alone still works on that model.
    assert (await ask(gateway, mode, messages=[user("just text")])).content == "just text"


async def test_the_echo_model_takes_images(start_gateway: StartGateway, state_dir: Path) -> None:
    gateway = await start_gateway(make_config(state_dir))  # no provider: builtin/echo
    size = len(IMAGES["image/gif"])
    content = [{"type": "text", "text": "describe"}, image_part(data_url("image/gif"))]
    answer = await ask(gateway, "async-stream", messages=[user(content)])
    assert answer.content == f"describe [image image/gif, {size} bytes]"


async def test_a_stored_image_comes_back_as_a_note_and_shows_in_history(
    start_gateway: StartGateway, state_dir: Path, up: FakeOpenAI
) -> None:
    """The session keeps an image's type and size, not its bytes: the next turn tells the
    model an image was there, and chat.history shows an image block."""
    gateway = await start_gateway(vision_config(state_dir, up))
    key = "agent:main:pictures"
    headers = {"x-moltbot-session-key": key}
    content = [{"type": "text", "text": "Keep this"}, image_part(data_url("image/png"))]
    await ask(gateway, "async", messages=[user(content)], extra_headers=headers)
    await ask(gateway, "async", messages=[user("What did I send?")], extra_headers=headers)
    size = len(IMAGES["image/png"])
    stored = up.requests[1].messages[1]
    assert stored == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Keep this"},
            {"type": "text", "text": f"[image: image/png, {size} bytes, not kept in the history]"},
        ],
    }
    assert up.refusals == []
    client = await GatewayClient.connect(
        gateway.ws_url, token=TOKEN, client_id="test", mode="test", timeout=WAIT
    )
    try:
        history = await client.request("chat.history", {"sessionKey": key}, timeout=WAIT)
    finally:
        await client.close()
    assert history["messages"][0]["content"] == [
        {"type": "text", "text": "Keep this"},
        {"type": "image", "mimeType": "image/png", "size": size},
    ]
