"""fetch: a URL's page under the pool's web policy, as markdown, text, raw text or bytes (README: Web tools).

An async tool: one worker serves its whole credit of fetches at once on its
event loop, and holds the pool's cache and in-flight deduplication, so its
pool runs ONE worker by default (pool_defaults) with a high credit: two agents
asking for the same page at once cause one request. The HTTP stack (aiohttp,
trafilatura) is imported in the worker only, by `open`.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from para.daemon.tools.base import Finished, StrictModel, TaskContext, Tool, ToolFailure
from para.daemon.tools.web_options import WebToolOptions
from para.web.policy import Refused, WebPolicy

# Headers a task may not set: they would lie about the request's target or framing.
FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "te", "upgrade",
                               "keep-alive", "proxy-authorization", "proxy-connection", "expect"})


class FetchArgs(StrictModel):
    url: str = Field(description="the http or https URL to fetch", min_length=1, max_length=8192)
    format: Literal["markdown", "text", "raw", "bytes"] = Field(
        "markdown", description="markdown: the page's main content as markdown (HTML; other text as is); text: the same as plain text; "
                                "raw: the body as text, as received; bytes: the body base64-encoded")
    max_length: int = Field(20000, ge=1, le=10_000_000, description="characters of content returned at most (bytes for format 'bytes'); "
                                                                   "the answer's next_start_index says where the rest starts")
    links: bool = Field(False, description="markdown: keep the page's hyperlinks, as [text](url)")
    start_index: int = Field(0, ge=0, description="where the returned content starts, for reading a long page in pieces")
    timeout: float | None = Field(None, gt=0, description="seconds to wait for the page at most (at most the pool's total_timeout)")
    headers: dict[str, str] = Field(default_factory=dict, description="request headers to send (not Host or framing headers); "
                                                                      "Authorization and Cookie are dropped on a redirect to another origin")

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if name.lower() in FORBIDDEN_HEADERS:
                raise ValueError(f"header {name!r} may not be set by a task; leave it out")
            if any(c in name + value for c in "\r\n\0") or not name.strip():
                raise ValueError(f"header {name!r} has an empty name or a line break; send one line per header")
        return headers


class FetchOptions(WebToolOptions):
    """fetch's pool options: the HTTP client's (web/options.py), its workers' sandbox, and HTML extraction's."""
    extract_timeout: float = Field(20.0, gt=0, description="seconds extracting one page's main content may take; "
                                                           "past it the extraction is killed and the task fails (format raw still works)")
    extract_processes: int = Field(2, ge=1, le=64, description="processes extracting pages' main content at once (each some 60 MB)")


class Fetch(Tool):
    name = "fetch"
    description = ("Fetches a web page (http/https) and returns its status, headers, final URL after redirects and its content: "
                   "the main text as markdown by default, or plain text, raw text or bytes; long pages in pieces "
                   "(max_length, start_index). Hosts are checked against parad's web policy on every redirect; answers are cached.")
    Args = FetchArgs
    Options = FetchOptions
    is_async = True
    retry_safe = True
    read_only = True
    default_credit = 128
    # One worker: the cache and in-flight deduplication are the worker's, so one worker makes them the pool's.
    pool_defaults = {"min_workers": 1, "max_workers": 1, "default_timeout": 60}

    _admit_policy: tuple[Any, WebPolicy] | None = None   # (the config it was built from, the policy)

    def admit(self, args: FetchArgs, options: FetchOptions, timeout: float | None) -> None:
        """Refuse at submission what the policy refuses by name alone (no DNS here; the worker checks addresses)."""
        try:
            url = urlsplit(args.url)
            host = url.hostname
        except ValueError as exc:
            raise ToolFailure(f"{args.url!r} is not a URL: {exc}") from None
        if url.scheme.lower() not in ("http", "https") or not host:
            raise ToolFailure(f"{args.url!r} is not an http(s) URL with a host; only http and https are fetched")
        try:
            self._policy(options).check_host(host)
        except Refused as exc:
            raise ToolFailure(f"refused by the web policy: {exc}") from None

    def _policy(self, options: FetchOptions) -> WebPolicy:
        # Built once per pool config, not per submission: parad admits every fetch on its one loop.
        if self._admit_policy is None or self._admit_policy[0] is not options.policy:
            self._admit_policy = (options.policy, options.policy.policy())
        return self._admit_policy[1]

    async def open(self, options: FetchOptions) -> None:
        from para.web.extract import NotText
        from para.web.http import FetchError
        from para.web.pages import Pages, cut
        self.pages = Pages(options, extract_processes=options.extract_processes, extract_timeout=options.extract_timeout)
        self.failures, self.cut = (FetchError, NotText), cut   # imported here, once: not on parad's side
        await self.pages.open()

    async def close(self) -> None:
        await self.pages.close()

    async def run_async(self, args: FetchArgs, options: FetchOptions, ctx: TaskContext) -> Finished:
        try:
            page = await self.pages.page(args.url, args.format, args.headers, args.timeout, args.links)
        except self.failures as exc:
            raise ToolFailure(str(exc)) from None
        content, length, nxt = self.cut(page.content, args.start_index, args.max_length)
        resp = page.response
        value: dict[str, Any] = {
            "url": resp.url, "final_url": resp.final_url, "status": resp.status, "reason": resp.reason,
            "headers": resp.headers, "content_type": resp.content_type, "format": args.format, "title": page.title,
            "content": content, "length": length, "start_index": args.start_index, "next_start_index": nxt,
            "truncated": resp.truncated, "redirects": resp.redirects, "cached": page.how,
        }
        return Finished(value=value)
