"""What a sandboxed command may do: the pool's policy, and a task's tightening of it.

A pool's `SandboxPolicy` comes from parad.yaml. A task may send a
`TaskPolicy` that only tightens it (lower limits, fewer writable roots, more
denied paths, network off or a narrower allow-list); `tighten` refuses
anything that would loosen it, naming the field and both values.

`network` is off (false), on (true), or an allow-list of domain patterns:
then commands have no network but an HTTP(S) proxy outside the sandbox
that applies para.web.policy to each request (daemon/egress.py).
"""

from __future__ import annotations

import hashlib
import os
import pwd
from typing import Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_validator

from para.sandbox.environment import DEFAULT_ALLOW, SECRET_PATTERNS
from para.web.policy import WebPolicyConfig, check_pattern

GiB = 1 << 30
MiB = 1 << 20


class PolicyError(ValueError):
    """A task asked for more than its pool's policy grants."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsPolicy(_Model):
    timeout: float = Field(3600.0, gt=0, description="most wall-clock seconds a command may run before its tree is killed (a task's timeout may only be lower)")
    cpu_seconds: int | None = Field(None, gt=0, description="CPU seconds (RLIMIT_CPU)")
    memory: ByteSize | None = Field(4 * GiB, gt=0, description="memory of the command's whole tree: cgroup memory.max where parad owns a cgroup, else RSS sampled by the worker")
    processes: int | None = Field(512, gt=0, description="processes in the command's tree: cgroup pids.max, else counted by the worker (and RLIMIT_NPROC under run_as)")
    open_files: int | None = Field(1024, gt=0, description="RLIMIT_NOFILE")
    file_size: ByteSize | None = Field(GiB, gt=0, description="largest file the command may write (RLIMIT_FSIZE)")
    address_space: ByteSize | None = Field(None, gt=0, description="RLIMIT_AS; off by default because it breaks Go, Node and JVM programs")
    output_bytes: ByteSize = Field(MiB, gt=0, description="bytes kept per stream (head and tail around a marker); the full size is reported")
    output_kill_bytes: ByteSize | None = Field(256 * MiB, gt=0, description="a stream that passes this many bytes ends the command (limit: output)")


# Credentials an agent's commands have no business reading: the user's (parad's
# home), and the host's password hashes and ssh host keys (with their backups).
DEFAULT_DENY_READ = ("~/.ssh", "~/.gnupg", "~/.aws", "~/.azure", "~/.config/gcloud", "~/.kube",
                     "~/.docker", "~/.netrc", "~/.pypirc", "~/.git-credentials", "~/.npmrc",
                     "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/ssh/ssh_host_*_key")


class FilesystemPolicy(_Model):
    read_only_root: bool = Field(True, description="the whole filesystem is read-only but for `writable`")
    writable: list[str] = Field(default_factory=lambda: ["."], description="writable roots; '.' is the task's workspace (its project; parad's working directory for a task that names none), '~' is home")
    private_tmp: bool = Field(True, description="an empty /tmp per worker, gone when it exits")
    deny_read: list[str] = Field(default_factory=lambda: list(DEFAULT_DENY_READ),
                                 description="paths hidden from commands, whether they exist yet or not ('~' is parad's home; a '*' pattern in the last part)")
    read_only: list[str] = Field(
        default_factory=lambda: [".git/hooks", ".git/config"],
        description="kept read-only inside writable roots; relative paths apply to every writable root")


class EnvPolicy(_Model):
    from_caller: bool = Field(True, description="a task that sends its caller's environment (paractl and the clients do) runs with it, minus secret-looking names and `drop`; false, or a task that sends none: the pool's environment (`allow`, `set`)")
    allow: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOW), description="parad's variables passed through (globs), when a task sends no environment of its own")
    set: dict[str, str] = Field(default_factory=dict, description="variables every command gets")
    secrets: list[str] = Field(default_factory=list, description=f"names passed through although they look secret ({', '.join(SECRET_PATTERNS)})")
    drop: list[str] = Field(default_factory=list, description="more names (globs) never taken from a caller's environment")


class CgroupPolicy(_Model):
    cpu_weight: int | None = Field(None, ge=1, le=10000, description="cpu.weight of the pool's cgroup (100 is the kernel's default)")
    cpu_max: str | None = Field(None, pattern=r"^(max|\d+)( \d+)?$", description="cpu.max of each command, e.g. '200000 100000' for two CPUs")


class EgressPolicy(_Model):
    """What the egress proxy applies besides the allow-list in `network` (web/policy.py says how)."""
    deny: list[str] = Field(default_factory=list, description="host names never reached through the proxy ('example.com', '*.example.com'); deny wins over the allow-list")
    allow_private: list[str] = Field(default_factory=list, description="networks (CIDR) the proxy may connect to although not public: loopback, private, link-local and metadata addresses are refused otherwise")
    hosts: dict[str, str] = Field(default_factory=dict, description="names the proxy resolves to these addresses instead of by DNS (tests, split-horizon names); the addresses are still checked")


Network = bool | list[str]


def _allow_list(network: Network | None) -> Network | None:
    """A list of domain patterns checked (never empty: an empty allow-list would mean any name)."""
    if not isinstance(network, list):
        return network
    if not network:
        raise ValueError("network: [] allows nothing; write false for no network, or list the domains to allow")
    return [check_pattern(p) for p in network]


class SandboxPolicy(_Model):
    isolation: Literal["namespaces", "none"] = Field("namespaces", description="namespaces: each worker lives in one long-lived bubblewrap sandbox; none: rlimits only")
    allow_degraded: bool = Field(True, description="when the host cannot give `isolation`, run without it (logged, in status and a metric) instead of refusing to start")
    run_as: str | None = Field("owner", description="who commands run as when parad runs as root: 'owner', the owner of the task's workspace; a user name pins that user (give one that runs nothing else on the host: its commands then start cheaper); null: as root (logged as degraded)")
    allow_root: Literal["namespaces", "always", "never"] = Field("namespaces", description="a workspace owned by root (a container's /app) under run_as 'owner': 'namespaces' runs its commands as root with every capability dropped and NO_NEW_PRIVS, only where the pool has namespace isolation (else its tasks are refused); 'always' also without (root with no capabilities, but no read-only filesystem: logged as degraded); 'never' refuses its tasks")
    network: Network = Field(False, description="false: no network; true: the host's; a list of domains ('pypi.org', '*.pythonhosted.org', '*'): only an HTTP(S) proxy, outside the sandbox, that reaches those names (HTTP_PROXY and HTTPS_PROXY are set for commands)")
    egress: EgressPolicy = Field(default_factory=EgressPolicy, description="with a network allow-list: what else the proxy applies (denied names, private networks allowed, pinned names)")
    limits: LimitsPolicy = Field(default_factory=LimitsPolicy)
    filesystem: FilesystemPolicy = Field(default_factory=FilesystemPolicy)
    env: EnvPolicy = Field(default_factory=EnvPolicy)
    cgroup: CgroupPolicy = Field(default_factory=CgroupPolicy)

    @field_validator("run_as")
    @classmethod
    def _user_exists(cls, name: str | None) -> str | None:
        return check_user(name)

    @field_validator("network")
    @classmethod
    def _network(cls, network: Network) -> Network:
        return _allow_list(network)

    def web_config(self) -> WebPolicyConfig | None:
        """The egress proxy's policy for this pool (None unless `network` is an allow-list)."""
        if not isinstance(self.network, list):
            return None
        return WebPolicyConfig(allow=self.network, **self.egress.model_dump())


def proxy_name(config: WebPolicyConfig) -> str:
    """The name of the proxy socket that applies `config`: pools with the same policy share one,
    and a worker finds its pool's from its options alone."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def check_user(name: str | None) -> str | None:
    """`name` if it is a user of this host, 'owner' or None; refused at config check, not at the first task."""
    if name is None or name == "owner":
        return name
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"user {name!r} does not exist on this host; name an existing user "
                         f"(one that runs nothing else), 'owner' for the workspace's owner, or null to run commands as root") from None
    return name


class ReadOnlySandbox(_Model):
    """The sandbox of a pool whose tool only reads (read, glob, grep): nothing writable, no network."""
    isolation: Literal["namespaces", "none"] = Field("namespaces", description="namespaces: the pool's workers live in a read-only bubblewrap sandbox; none: no sandbox")
    allow_degraded: bool = Field(True, description="when the host cannot give `isolation`, run without it (logged, in status and a metric)")
    run_as: str | None = Field("owner", description="whose permissions the tool reads files with when parad runs as root: 'owner', the owner of the task's workspace; a user name pins that user; null: as root (logged as degraded)")
    allow_root: Literal["namespaces", "always", "never"] = Field("namespaces", description="a workspace owned by root under run_as 'owner': read as root without capabilities only inside namespaces ('namespaces'), also without them ('always'), or refuse ('never')")
    deny_read: list[str] = Field(default_factory=lambda: list(DEFAULT_DENY_READ), description="paths this tool cannot see, whether they exist yet or not")

    @field_validator("run_as")
    @classmethod
    def _user_exists(cls, name: str | None) -> str | None:
        return check_user(name)

    def as_policy(self) -> SandboxPolicy:
        return SandboxPolicy(isolation=self.isolation, allow_degraded=self.allow_degraded, run_as=self.run_as,
                             allow_root=self.allow_root, network=False,
                             filesystem=FilesystemPolicy(writable=[], private_tmp=False, deny_read=self.deny_read, read_only=[]))


WEB_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR")


class WebSandbox(_Model):
    """The sandbox of a pool whose tool reaches the web from Python and runs no command (fetch, search):
    the host's network (the web policy decides what is reached), nothing writable, credentials hidden."""
    isolation: Literal["namespaces", "none"] = Field("namespaces", description="namespaces: the pool's workers live in a read-only bubblewrap sandbox with the host's network; none: no sandbox")
    allow_degraded: bool = Field(True, description="when the host cannot give `isolation`, run without it (logged, in status and a metric)")
    deny_read: list[str] = Field(default_factory=lambda: list(DEFAULT_DENY_READ), description="paths the worker cannot see, whether they exist yet or not")

    def as_policy(self) -> SandboxPolicy:
        # run_as null: the worker reads no one's files and runs no command; as root it holds no capability.
        # Its environment is parad's less all but these: OpenSSL finds a host's own CA bundle by the last two.
        return SandboxPolicy(isolation=self.isolation, allow_degraded=self.allow_degraded, run_as=None, network=True,
                             filesystem=FilesystemPolicy(writable=[], private_tmp=True, deny_read=self.deny_read, read_only=[]),
                             env=EnvPolicy(allow=[*DEFAULT_ALLOW, *WEB_ENV]))


class TaskLimits(_Model):
    """A task's limits: each may only lower its pool's (LimitsPolicy says what each one is)."""
    timeout: float | None = Field(None, gt=0, description="wall-clock seconds before the command's tree is killed")
    cpu_seconds: int | None = Field(None, gt=0, description="CPU seconds (RLIMIT_CPU)")
    memory: ByteSize | None = Field(None, gt=0, description="memory of the command's whole tree, in bytes or as '512MiB'")
    processes: int | None = Field(None, gt=0, description="processes in the command's tree")
    open_files: int | None = Field(None, gt=0, description="open files per process (RLIMIT_NOFILE)")
    file_size: ByteSize | None = Field(None, gt=0, description="largest file the command may write (RLIMIT_FSIZE)")
    address_space: ByteSize | None = Field(None, gt=0, description="virtual memory per process (RLIMIT_AS)")
    output_bytes: ByteSize | None = Field(None, gt=0, description="bytes kept per output stream (head and tail)")
    output_kill_bytes: ByteSize | None = Field(None, gt=0, description="a stream that passes this many bytes ends the command")


class TaskPolicy(_Model):
    """A task's request to run under a stricter policy than its pool's."""
    limits: TaskLimits = Field(default_factory=TaskLimits, description="limits lower than the pool's")
    network: Network | None = Field(None, description="false: no network, even where the pool allows it; a list of domains: a part of the pool's allow-list (true only where the pool's network is on)")
    writable: list[str] | None = Field(None, description="a subset of the pool's writable roots (or paths inside them)")
    deny_read: list[str] = Field(default_factory=list, description="more paths the command cannot read")
    read_only: list[str] = Field(default_factory=list, description="paths inside writable roots that the command may only read")

    @field_validator("network")
    @classmethod
    def _network(cls, network: Network | None) -> Network | None:
        return _allow_list(network)

    def touches_mounts(self) -> bool:
        """Whether honouring this needs a sandbox of its own (mounts or network differ from the pool's)."""
        return self.network is not None or self.writable is not None or bool(self.deny_read or self.read_only)


def resolve_path(path: str, base: str | None = None) -> str:
    """'~' is parad's home, a relative path is relative to `base` (default: parad's working directory)."""
    expanded = os.path.expanduser(path)
    return os.path.normpath(os.path.join(base or os.getcwd(), expanded))


def _within(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def tighten(pool: SandboxPolicy, task: TaskPolicy | None) -> SandboxPolicy:
    """The policy one task runs under; PolicyError if `task` would loosen `pool`."""
    if task is None:
        return pool
    limits = pool.limits.model_copy()
    for name, asked in task.limits:
        if asked is None:
            continue
        granted = getattr(pool.limits, name)
        if granted is not None and asked > granted:
            raise PolicyError(f"policy.limits.{name} {asked} exceeds the pool's {granted}; a task may only tighten its pool's policy")
        setattr(limits, name, asked)
    fs = pool.filesystem.model_copy()
    if task.writable is not None:
        roots = [resolve_path(w) for w in pool.filesystem.writable]
        asked_roots = [resolve_path(w) for w in task.writable]
        outside = [w for w in asked_roots if not _within(w, roots)]
        if outside:
            raise PolicyError(f"policy.writable {outside} is outside the pool's writable roots {roots}; a task may only narrow them")
        fs.writable = asked_roots
    fs.deny_read = [*fs.deny_read, *task.deny_read]
    fs.read_only = [*fs.read_only, *task.read_only]
    network = pool.network if task.network is None else _narrow_network(pool.network, task.network)
    return pool.model_copy(update={"limits": limits, "filesystem": fs, "network": network})


def _narrow_network(pool: Network, task: Network) -> Network:
    """The network a task asking for `task` gets in a pool with `pool`; PolicyError if it is more."""
    if task is False:
        return False
    if isinstance(pool, list):
        if task is True:
            raise PolicyError(f"policy.network true is refused: the pool's network is the allow-list {pool}; "
                              f"a task may give a part of it, or false")
        try:
            return list(WebPolicyConfig(allow=pool).policy().narrowed(task).allow)
        except ValueError as exc:
            raise PolicyError(f"policy.network: {exc}") from None
    if not pool:
        raise PolicyError(f"policy.network {'true' if task is True else task} is refused: the pool's policy has the network off")
    if task is not True:
        raise PolicyError("policy.network as a list needs a pool whose network is an allow-list (this pool's is on, "
                          "with no proxy); give false, or run the task in a pool with an allow-list")
    return True


def network_kind(network: Network) -> str:
    """'off', 'on' or 'proxy': what a command's network namespace is (lists differ only at the proxy)."""
    return "proxy" if isinstance(network, list) else "on" if network else "off"


def mounts_differ(a: SandboxPolicy, b: SandboxPolicy) -> bool:
    """Whether two policies need different sandboxes (a worker's cannot serve both): a narrower
    allow-list does not, since the worker's proxy port for the task applies it."""
    return network_kind(a.network) != network_kind(b.network) or a.filesystem != b.filesystem

