"""A response body as the task asked for it: main-content markdown or text, the text as received, or bytes.

HTML goes through trafilatura (main content: navigation, footers and
boilerplate out), in pure Python and lxml, no JavaScript runtime. Where it
finds no main content (short pages, unusual layouts) its baseline extractor
is tried, then all the page's visible text (trafilatura's, then the standard
library's parser, which also reads fragments lxml gives up on), so a page that
has text never comes back empty. Other text types (plain, JSON, XML, ...) are returned as
decoded. This is CPU work on what a server sent: fetch runs it in child processes (web/renderer.py).
"""

from __future__ import annotations

import base64
import codecs
import html
import logging
import re
from html.parser import HTMLParser

FORMATS = ("markdown", "text", "raw", "bytes")
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "application/xhtml+xml",
              "application/rss+xml", "application/atom+xml", "application/ld+json", "application/x-ndjson")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.I)
# Two searches, each linear: one regex spanning opener to closer rescans the rest of the page from
# every opener, quadratic for a page of unclosed openers (40 s for 200 kB, the GIL held throughout).
_TITLE_OPEN = re.compile(r"<title\b[^>]{0,200}>", re.I)
_TITLE_CLOSE = re.compile(r"</title\s*>", re.I)
# Python codecs that are no web charset and that a server may still name: punycode decodes in
# quadratic time (minutes for a capped body, on the worker's loop), idna and undefined raise
# whatever `errors` says. Codecs that are not text encodings (zlib, rot13) raise LookupError.
_NOT_CHARSETS = frozenset({"punycode", "idna", "undefined"})


class NotText(Exception):
    """A body that has no text to extract (an image, a PDF, ...); the message says what to ask for instead."""


def render(body: bytes, content_type: str, charset: str | None, fmt: str, url: str,
           links: bool = False) -> tuple[str, str | None]:
    """(content, title) of `body` in format `fmt` (one of FORMATS); title only for HTML.
    `links`: markdown keeps the page's hyperlinks (off by default: half the size, and skip links
    such as "Jump to navigation" come back with them)."""
    if fmt == "bytes":
        return base64.b64encode(body).decode("ascii"), None
    html_body = is_html(body, content_type)
    if not html_body and not _is_text(body, content_type):
        raise NotText(f"{url} is {content_type or 'binary'}, not text; ask for format 'bytes'")
    text = decode(body, charset, html_body)
    if fmt == "raw" or not html_body:
        return text, None
    return extract(text, fmt, url, links), title(text)


def decode(body: bytes, charset: str | None, html_body: bool) -> str:
    """The body as text: the header's charset, else an HTML meta charset, else UTF-8 (bad bytes replaced)."""
    text = _decoded(body, charset)
    if text is None and html_body:   # the page is searched for a meta charset only when the header named none that works
        text = _decoded(body, _meta_charset(body))
    return body.decode("utf-8", errors="replace") if text is None else text


def _decoded(body: bytes, name: str | None) -> str | None:
    if name and _known(name):
        try:
            return body.decode(name, errors="replace")
        except LookupError:
            pass    # a codec, but not a text encoding (zlib, base64): the server's charset is wrong
    return None


def extract(page: str, fmt: str, url: str, links: bool = False) -> str:
    """The page's main content as markdown (`fmt` 'markdown') or plain text, never empty if the page has text."""
    import trafilatura   # imported where used: parad and the fork server need not load it

    # Its "no main content" is an answer here, not an error for the worker's log.
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    found = trafilatura.extract(page, url=url, output_format="markdown" if fmt == "markdown" else "txt",
                                include_links=links and fmt == "markdown", include_tables=True, include_comments=False)
    if found:
        return found
    found = trafilatura.baseline(page)[1]
    return found or trafilatura.html2txt(page) or visible_text(page)


def visible_text(page: str) -> str:
    """Every piece of text outside scripts and styles, one line per block, by the standard library's parser."""
    parser = _TextParser()
    parser.feed(page)
    parser.close()
    return "\n".join(" ".join(line.split()) for line in "".join(parser.parts).splitlines() if line.strip())


class _TextParser(HTMLParser):
    HIDDEN = frozenset({"script", "style", "template", "noscript", "head"})
    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
                        "pre", "blockquote", "table", "ul", "ol", "dt", "dd"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.hidden += tag in self.HIDDEN
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN and self.hidden:
            self.hidden -= 1
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def title(page: str) -> str | None:
    head = page[:200_000]
    opened = _TITLE_OPEN.search(head)
    closed = _TITLE_CLOSE.search(head, opened.end()) if opened else None
    if opened is None or closed is None:
        return None
    return " ".join(html.unescape(head[opened.end():closed.start()]).split()) or None


def is_html(body: bytes, content_type: str) -> bool:
    """Whether the body is HTML: by its Content-Type, or by its first bytes when it has none."""
    if content_type:
        return "html" in content_type
    head = body[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _is_text(body: bytes, content_type: str) -> bool:
    if content_type:
        return content_type.startswith(TEXT_TYPES) or content_type.endswith(("+json", "+xml"))
    return b"\x00" not in body[:4096]


def _meta_charset(body: bytes) -> str | None:
    found = _META_CHARSET.search(body[:4096])
    return found.group(1).decode("ascii") if found else None


def _known(name: str) -> bool:
    try:
        return codecs.lookup(name).name not in _NOT_CHARSETS
    except LookupError:
        return False
