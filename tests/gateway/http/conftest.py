"""Fixtures for the OpenAI-endpoint tests: fake upstreams and gateways built from an app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fake_upstreams import FakeOpenAI, echo_last_user


@pytest.fixture
async def up() -> AsyncIterator[FakeOpenAI]:
    """An OpenAI-format upstream that answers with the last user message."""
    async with FakeOpenAI(reply=echo_last_user) as fake:
        yield fake


@pytest.fixture
async def up2() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(reply="second provider here") as fake:
        yield fake
