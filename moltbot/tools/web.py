"""The `web_fetch` tool: a page's readable text, fetched through the guarded fetcher.

moltbot.net.fetch does the refusing: http(s) only, no loopback, private, link-local or cloud
metadata addresses (checked after DNS and again on every redirect, at most 3), one deadline
and a byte cap. `tools.web.fetch.allowedHosts` lets names, `*.domain`, IPs or networks through
for users who fetch from their intranet. Only text types are taken (HTML, plain text, JSON,
XML); HTML is reduced to its readable text with Beautiful Soup (the standard library's parser:
no compiled dependency), dropping scripts, styles, navigation and forms, and preferring the
page's <main> or <article> when it has one.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from bs4 import BeautifulSoup, NavigableString, Tag

from moltbot.config.model import WebFetchConfig
from moltbot.net.fetch import Fetched, FetchPolicy, FetchRefused, fetch
from moltbot.tools.base import Args, ToolContext, ToolError, ToolResult, bounded, schema

TEXT_TYPES = (
    "text/*",
    "application/xhtml+xml",
    "application/xml",
    "application/json",
    "application/rss+xml",
    "application/atom+xml",
)
HTML_TYPES = ("text/html", "application/xhtml+xml")
MIN_CHARS = 100
DROPPED_TAGS = (
    "script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "head",
    "nav", "footer", "aside", "form", "button", "select",
)  # fmt: skip
BLOCK_TAGS = (
    "p", "div", "section", "article", "main", "header", "table", "tr", "ul", "ol", "dl", "dt",
    "dd", "pre", "blockquote", "figure", "figcaption", "hr", "address", "details", "summary",
)  # fmt: skip
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class WebFetchTool:
    name = "web_fetch"
    group = "web"
    parallel_safe = True

    def __init__(self, config: WebFetchConfig) -> None:
        self.config = config
        self.policy = FetchPolicy(
            max_bytes=config.max_bytes,
            timeout_seconds=config.timeout_seconds,
            max_redirects=3,
            allowed_hosts=config.allowed_hosts,
            allowed_content_types=TEXT_TYPES,
        )
        self.description = (
            "Fetch an http(s) URL and return its readable text (HTML reduced to text). Public "
            f"addresses only; at most {config.max_bytes} bytes and {config.max_chars} "
            "characters of text (maxChars asks for less)."
        )
        self.parameters = schema(
            {
                "url": {"type": "string", "description": "http:// or https:// URL"},
                "maxChars": {"type": "integer", "minimum": MIN_CHARS},
            },
            ("url",),
        )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a = Args(self.name, args)
        url = a.string("url", required=True)
        wanted = a.integer("maxChars", default=self.config.max_chars, minimum=MIN_CHARS)
        limit = min(wanted or self.config.max_chars, self.config.max_chars)
        try:
            fetched = await fetch(url.strip(), self.policy)
        except FetchRefused as exc:
            raise ToolError(str(exc)) from None
        title, text = await asyncio.to_thread(readable, fetched)
        head = f"URL: {fetched.url}\nContent-Type: {fetched.content_type}\n"
        if title:
            head += f"Title: {title}\n"
        content = head + "\n" + bounded(text, limit)
        return ToolResult.success(content, f"fetched {fetched.url} ({len(text)} characters)")


def readable(fetched: Fetched) -> tuple[str | None, str]:
    """(title, text) of a fetched document."""
    if fetched.content_type not in HTML_TYPES:
        return None, fetched.body.decode(fetched.charset or "utf-8", "replace")
    return html_text(fetched.body, fetched.charset)


def html_text(data: bytes, charset: str | None = None) -> tuple[str | None, str]:
    soup = BeautifulSoup(data, "html.parser", from_encoding=charset)
    title = " ".join(soup.title.get_text().split()) if soup.title else None
    for tag in soup(DROPPED_TAGS):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    assert isinstance(root, Tag | BeautifulSoup)
    _mark_structure(root)
    return title or None, _tidy(root.get_text())


def _mark_structure(root: Tag) -> None:
    """Line breaks around blocks, `#` before headings, `- ` before list items."""
    for br in root.find_all("br"):
        br.replace_with(NavigableString("\n"))
    for tag in root.find_all(True):
        name = tag.name or ""
        if len(name) == 2 and name[0] == "h" and name[1] in "123456":
            tag.insert(0, NavigableString("\n" + "#" * int(name[1]) + " "))
            tag.append(NavigableString("\n"))
        elif name == "li":
            tag.insert(0, NavigableString("\n- "))
        elif name in ("td", "th"):
            tag.append(NavigableString(" \t"))
        elif name in BLOCK_TAGS:
            tag.insert(0, NavigableString("\n"))
            tag.append(NavigableString("\n"))


def _tidy(text: str) -> str:
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
