"""The pool options of a tool that reaches the web (fetch, search): the HTTP client's, and its workers' sandbox.

The sandbox is parad's to apply (daemon/isolation.py), so it is added here, not in web/, which knows nothing of it.
"""

from __future__ import annotations

from pydantic import Field

from para.sandbox.policy import WebSandbox
from para.web.options import HttpOptions


class WebToolOptions(HttpOptions):
    """HttpOptions, and the sandbox the pool's workers live in."""
    sandbox: WebSandbox = Field(default_factory=WebSandbox, description="the workers' sandbox: read-only, credentials hidden, the host's network")
