"""The HTTP client's settings: a fetch or search pool's `options` in parad.yaml.

Pydantic only (no aiohttp): parad reads and checks them at start without
loading the HTTP stack, which only workers need.
"""

from __future__ import annotations

from pydantic import BaseModel, ByteSize, ConfigDict, Field

from para.web.policy import WebPolicyConfig


class HttpOptions(BaseModel):
    """The HTTP client's settings, a pool's `options` in parad.yaml (fetch and search)."""
    model_config = ConfigDict(extra="forbid")

    policy: WebPolicyConfig = Field(default_factory=WebPolicyConfig, description="which hosts may be reached (README: Web tools); checked on every redirect hop and after DNS")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to open a TCP connection to a host")
    total_timeout: float = Field(30.0, gt=0, description="seconds for a whole request, redirects and body included (a task may ask for less)")
    max_bytes: ByteSize = Field(5 << 20, ge=1024, description="bytes of a response body read at most (after decompression); the rest is not read and the answer says truncated")
    max_redirects: int = Field(10, ge=0, le=50, description="redirects followed at most")
    per_host: int = Field(8, ge=1, description="connections open to one host at once (a worker's tasks wait for a free one)")
    max_connections: int = Field(256, ge=1, description="connections open at once, all hosts together")
    cache_bytes: ByteSize = Field(64 << 20, ge=0, description="bytes of answers cached per worker (0: no cache); least recently used out first")
    cache_ttl_max: float = Field(3600.0, ge=0, description="seconds an answer is cached at most, whatever its Cache-Control or Expires say")
    user_agent: str = Field("para-fetch/0.1", min_length=1, description="the User-Agent header sent")
