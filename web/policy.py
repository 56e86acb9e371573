"""Which hosts and addresses the web may be reached at: one policy for fetch, search and the egress proxy.

A host name is checked against the domain rules before it is resolved, and
every address it resolves to is checked after (a name that resolves to a
private address is refused like the address itself), on the first request
and on every redirect hop: connections then go to the checked addresses only,
so a second lookup cannot answer differently (DNS rebinding).

Domain rules: `example.com` is that name only, `*.example.com` any name under
it (not the name itself), `*` every name. `deny` wins over `allow`; an empty
`allow` allows every name not denied.

Addresses: only globally routable unicast ones, unless `allow_private` names a
network that holds the address. So loopback, RFC 1918, link-local (the cloud
metadata address 169.254.169.254 among them), shared (100.64/10), unique-local,
multicast and reserved addresses are refused by default; an IPv4 address
written as IPv6 (`::ffff:10.0.0.1`) is judged as the IPv4 address.

`hosts` maps names to addresses before DNS (tests, split-horizon names); the
addresses it gives are checked like any other.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class Refused(Exception):
    """A host or address the policy does not allow; the message names the rule that refused it."""


class WebPolicyConfig(BaseModel):
    """The policy as parad.yaml gives it (a pool's `web` options, the egress proxy's)."""
    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(default_factory=list, description="host names that may be reached: 'example.com' (that name), '*.example.com' (names under it), '*' (any); empty: any name not denied")
    deny: list[str] = Field(default_factory=list, description="host names never reached, same patterns; deny wins over allow")
    allow_private: list[str] = Field(default_factory=list, description="networks (CIDR, e.g. 10.1.0.0/16) that may be reached although not public: loopback, private, link-local and metadata addresses are refused otherwise")
    hosts: dict[str, str] = Field(default_factory=dict, description="names resolved to these addresses instead of by DNS (tests, split-horizon names); the addresses are still checked")

    @field_validator("allow", "deny")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        return [check_pattern(p) for p in patterns]

    @field_validator("allow_private")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        for n in networks:
            try:
                ipaddress.ip_network(n, strict=False)
            except ValueError:
                raise ValueError(f"allow_private: {n!r} is not a network; write it as an address or CIDR, e.g. 10.1.0.0/16") from None
        return networks

    @field_validator("hosts")
    @classmethod
    def _addresses(cls, hosts: dict[str, str]) -> dict[str, str]:
        for name, addr in hosts.items():
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise ValueError(f"hosts: {name!r} maps to {addr!r}, which is not an IP address") from None
        return {normalize_host(k): v for k, v in hosts.items()}

    def policy(self) -> "WebPolicy":
        return WebPolicy(tuple(self.allow), tuple(self.deny),
                         tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_private),
                         {k: ipaddress.ip_address(v) for k, v in self.hosts.items()})


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, international names in their ASCII (IDNA) form."""
    host = host.strip().rstrip(".").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise Refused(f"host name {host!r} is not a valid international domain name") from None


def check_pattern(pattern: str) -> str:
    p = pattern.strip().rstrip(".").lower()
    body = p[2:] if p.startswith("*.") else p
    if p != "*" and (not body or "*" in body or "/" in body or ":" in body and not _is_ip(body)):
        raise ValueError(f"{pattern!r} is not a domain pattern; write 'example.com', '*.example.com' or '*'")
    return p


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def matches(pattern: str, host: str) -> bool:
    """Whether `host` (normalized) is one `pattern` names."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def covers(outer: str, inner: str) -> bool:
    """Whether every name `inner` names is also named by `outer` (for narrowing an allow list)."""
    if outer == "*":
        return True
    if inner == "*":
        return False
    if inner.startswith("*."):
        return outer.startswith("*.") and (inner[1:].endswith(outer[1:]))
    return matches(outer, inner)


@dataclass(frozen=True)
class WebPolicy:
    """A checked policy: host rules, the private networks allowed, and pinned names."""
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    allow_private: tuple[IPNetwork, ...] = ()
    hosts: Mapping[str, IPAddress] = field(default_factory=dict)

    def check_host(self, host: str) -> str:
        """The normalized host if its name may be reached, else Refused naming the rule."""
        name = normalize_host(host)
        for pattern in self.deny:
            if matches(pattern, name):
                raise Refused(f"{name} is denied by the deny rule {pattern!r}")
        if self.allow and not any(matches(p, name) for p in self.allow):
            raise Refused(f"{name} is not in the allow list ({', '.join(self.allow)})")
        return name

    def check_address(self, name: str, addr: IPAddress) -> None:
        """Refused if `addr` (what `name` resolved to) is not public and no allow_private network holds it."""
        ip = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped else addr
        if ip.is_global and not ip.is_multicast:
            return
        if any(ip in net for net in self.allow_private):
            return
        raise Refused(f"{name} resolves to {ip}, a {_kind(ip)} address, which is refused "
                      f"(allow it with allow_private: [{ip}/{ip.max_prefixlen}])")

    async def resolve(self, host: str, port: int) -> list[str]:
        """Check `host`, resolve it, and return the addresses that pass, as strings to connect to.

        Addresses that fail are dropped; if none pass, Refused names why the first failed.
        """
        name = self.check_host(host)
        addrs = await self._lookup(name, port)
        passed, first_refusal = [], None
        for addr in addrs:
            try:
                self.check_address(name, addr)
                passed.append(str(addr))
            except Refused as exc:
                first_refusal = first_refusal or exc
        if not passed:
            raise first_refusal or Refused(f"{name} did not resolve to any address")
        return passed

    async def _lookup(self, name: str, port: int) -> list[IPAddress]:
        if name in self.hosts:
            return [self.hosts[name]]
        try:
            return [ipaddress.ip_address(name)]
        except ValueError:
            pass
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise Refused(f"{name} could not be resolved: {exc.strerror}") from None
        # getaddrinfo also parses numeric forms (2130706433, 0x7f.1): what it returns is what is checked.
        return _unique(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos)

    def narrowed(self, allow: Iterable[str] | None = None, deny: Iterable[str] = ()) -> "WebPolicy":
        """This policy narrowed by a task's own lists: its allow patterns must each be covered
        by this policy's allow list (ValueError naming the one that is not); its deny adds."""
        new_allow = self.allow
        if allow is not None:
            asked = tuple(check_pattern(p) for p in allow)
            for p in asked:
                if self.allow and not any(covers(outer, p) for outer in self.allow):
                    raise ValueError(f"{p!r} is not within the pool's allow list ({', '.join(self.allow)}); "
                                     f"a task may only narrow it")
            new_allow = asked
        return WebPolicy(new_allow, self.deny + tuple(check_pattern(p) for p in deny), self.allow_private, self.hosts)


def _kind(ip: IPAddress) -> str:
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata lives here)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    return "non-public"


def _unique(addrs: Iterable[IPAddress]) -> list[IPAddress]:
    seen: dict[IPAddress, None] = {}
    for a in addrs:
        seen.setdefault(a, None)
    return list(seen)
