"""The web policy (web/policy.py): domain rules, and addresses checked after resolution."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from pydantic import ValidationError

from para.web.policy import Refused, WebPolicyConfig


def policy(**kw):
    return WebPolicyConfig(**kw).policy()


def resolve(p, host: str) -> list[str]:
    return asyncio.run(p.resolve(host, 80))


def test_deny_wins_and_wildcards_name_subdomains_only() -> None:
    p = policy(allow=["example.com", "*.docs.example.org"], deny=["bad.docs.example.org"])
    assert p.check_host("Example.COM.") == "example.com"
    assert p.check_host("a.b.docs.example.org") == "a.b.docs.example.org"
    with pytest.raises(Refused, match="not in the allow list"):
        p.check_host("docs.example.org")          # *.x is not x itself
    with pytest.raises(Refused, match="not in the allow list"):
        p.check_host("www.example.com")
    with pytest.raises(Refused, match="deny rule 'bad.docs.example.org'"):
        p.check_host("bad.docs.example.org")
    assert policy(deny=["*.internal"]).check_host("pypi.org") == "pypi.org"   # empty allow: any not denied


@pytest.mark.parametrize("addr", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                  "100.100.100.200", "0.0.0.0", "::1", "fd00:ec2::254", "fe80::1",
                                  "::ffff:10.0.0.1", "224.0.0.1"])
def test_non_public_addresses_are_refused_unless_allowed(addr: str) -> None:
    with pytest.raises(Refused, match="refused"):
        policy().check_address("h", ipaddress.ip_address(addr))
    ip = ipaddress.ip_address(addr)
    ip = getattr(ip, "ipv4_mapped", None) or ip
    net = f"{ip}/{ip.max_prefixlen}"
    policy(allow_private=[net]).check_address("h", ip)


def test_public_addresses_pass() -> None:
    for addr in ("1.1.1.1", "2606:4700:4700::1111"):
        policy().check_address("h", ipaddress.ip_address(addr))


def test_names_are_checked_after_resolution() -> None:
    # Numeric spellings resolve to loopback: what is checked is what would be connected to.
    for host in ("localhost", "2130706433", "127.1", "[::1]"):
        with pytest.raises(Refused, match="loopback"):
            resolve(policy(), host)
    assert resolve(policy(allow_private=["127.0.0.0/8"]), "2130706433") == ["127.0.0.1"]
    pinned = policy(hosts={"api.test": "127.0.0.1"}, allow_private=["127.0.0.1"])
    assert resolve(pinned, "API.test") == ["127.0.0.1"]
    with pytest.raises(Refused, match="loopback"):
        resolve(policy(hosts={"api.test": "127.0.0.1"}), "api.test")
    with pytest.raises(Refused, match="could not be resolved"):
        resolve(policy(), "no-such-host.invalid")


def test_a_task_may_only_narrow_the_allow_list() -> None:
    p = policy(allow=["*.pypi.org", "files.pythonhosted.org"])
    narrow = p.narrowed(allow=["upload.pypi.org"], deny=["files.pythonhosted.org"])
    assert narrow.check_host("upload.pypi.org")
    with pytest.raises(Refused):
        narrow.check_host("x.pypi.org")
    for wider in ("*", "*.org", "example.com", "pypi.org"):
        with pytest.raises(ValueError, match="only narrow"):
            p.narrowed(allow=[wider])


def test_config_errors_say_what_to_write() -> None:
    with pytest.raises(ValidationError, match="not a domain pattern"):
        WebPolicyConfig(allow=["exa*mple.com"])
    with pytest.raises(ValidationError, match="not a network"):
        WebPolicyConfig(allow_private=["localhost"])
    with pytest.raises(ValidationError, match="not an IP address"):
        WebPolicyConfig(hosts={"a.test": "b.test"})
