"""search: ranked web results (title, url, snippet) from the pool's provider (README: Web tools).

An async tool like fetch, with the same HTTP client, policy, cache and
in-flight deduplication (web/search.py). Without a provider in its pool's
options, every task is refused at submission, saying how to configure one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from para.daemon.tools.base import Finished, StrictModel, TaskContext, Tool, ToolFailure
from para.daemon.tools.web_options import WebToolOptions

NO_PROVIDER = ("no search provider is configured for this pool; set its options.provider: searxng and "
               "options.searxng_url: http://HOST:PORT in parad.yaml (pools.search; a SearxNG instance with the json format enabled)")


class SearchArgs(StrictModel):
    query: str = Field(min_length=1, max_length=2000, description="what to search the web for")
    count: int = Field(10, ge=1, le=50, description="results returned at most, best first")
    page: int = Field(1, ge=1, le=20, description="which page of the provider's results (1: the first)")
    language: str | None = Field(None, max_length=20, description="results in this language (e.g. 'en', 'de-CH'); default: the provider's")


class SearchOptions(WebToolOptions):
    """search's pool options: the provider, and the HTTP client's (web/options.py) for reaching it, in its
    workers' sandbox."""
    provider: Literal["searxng"] | None = Field(None, description="where results come from: searxng (a SearxNG instance's JSON API); null: none, search tasks are refused")
    searxng_url: str | None = Field(None, description="the SearxNG instance's base URL, e.g. http://127.0.0.1:8888 (its host must pass `policy`)")
    cache_ttl_max: float = Field(600.0, ge=0, description="seconds a query's results are cached")

    @model_validator(mode="after")
    def _provider(self) -> "SearchOptions":
        if self.provider == "searxng" and not self.searxng_url:
            raise ValueError("provider searxng needs searxng_url: the instance's base URL, e.g. http://127.0.0.1:8888")
        return self


class Search(Tool):
    name = "search"
    description = ("Searches the web: ranked results (title, url, snippet) for a query from the configured provider "
                   "(SearxNG). Identical queries are answered once and cached; read a result with fetch.")
    Args = SearchArgs
    Options = SearchOptions
    is_async = True
    retry_safe = True
    read_only = True
    default_credit = 64
    # One worker, for one cache and one in-flight deduplication per pool (as fetch); none kept
    # warm, for most hosts configure no provider and every task is refused before it needs one.
    pool_defaults = {"min_workers": 0, "max_workers": 1, "default_timeout": 60}

    def admit(self, args: SearchArgs, options: SearchOptions, timeout: float | None) -> None:
        if options.provider is None:
            raise ToolFailure(NO_PROVIDER)

    async def open(self, options: SearchOptions) -> None:
        self.searcher = None
        if options.provider is None:
            return
        from para.web.search import PROVIDERS, Searcher
        self.searcher = Searcher(PROVIDERS[options.provider](options.searxng_url), options)
        await self.searcher.open()

    async def close(self) -> None:
        if self.searcher is not None:
            await self.searcher.close()

    async def run_async(self, args: SearchArgs, options: SearchOptions, ctx: TaskContext) -> Finished:
        from para.web.http import FetchError
        if self.searcher is None:
            raise ToolFailure(NO_PROVIDER)
        try:
            got = await self.searcher.search(args.query, args.count, args.page, args.language)
        except FetchError as exc:
            raise ToolFailure(f"search failed: {exc}") from None
        return Finished(value={"query": args.query, "provider": options.provider, "cached": got.how,
                               "results": [r.as_dict() for r in got.value]})
