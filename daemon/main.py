"""`parad`: run the para daemon in the foreground."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from para.ipc.endpoints import SYSTEM_RUNTIME_DIR, Endpoints, default_runtime_dir

if TYPE_CHECKING:
    from para.daemon.config import Config

SYSTEM_CONFIG = Path("/etc/para/parad.yaml")
SYSTEM_STATE_DIR = Path("/var/lib/para")
EXIT_CANNOT_RUN, EXIT_BAD_CONFIG = 1, 2
EXIT_CODES = """exit codes:
  0  stopped cleanly (SIGTERM, SIGINT, paractl shutdown), or a check passed
  1  cannot run here: the runtime or state dir cannot be created or is another
     parad's, or the sandbox is unavailable (the message names what and where)
  2  a usage error or a config that does not check"""


def _user_config() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "para" / "parad.yaml"


def _user_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "para"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parad", description="para daemon: runs tool calls in parallel in warm, sandboxed worker pools.",
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="config file (default: $XDG_CONFIG_HOME/para/parad.yaml if present, else built-in defaults)")
    p.add_argument("--runtime-dir", type=Path, help="sockets and lock (default: $XDG_RUNTIME_DIR/para or /tmp/para-UID)")
    p.add_argument("--state-dir", type=Path, help="persistent state (default: $XDG_STATE_HOME/para)")
    p.add_argument("--system", action="store_true", help="system service: /etc/para, /run/para, /var/lib/para")
    p.add_argument("--check-config", type=Path, metavar="FILE", help="validate FILE and exit")
    p.add_argument("--print-default-config", action="store_true", help="print the commented default parad.yaml and exit")
    p.add_argument("--print-config", action="store_true",
                   help="print the config parad would run with (its config file merged over the defaults) and exit")
    p.add_argument("--version", action="version", version=f"parad {version('para')}")
    return p


def _resolve(args: argparse.Namespace) -> tuple[Path | None, Path, Path]:
    if args.system:
        config = args.config or (SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None)
        return config, args.runtime_dir or SYSTEM_RUNTIME_DIR, args.state_dir or SYSTEM_STATE_DIR
    user = _user_config()
    config = args.config or (user if user.exists() else None)
    return config, args.runtime_dir or default_runtime_dir(), args.state_dir or _user_state_dir()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.print_default_config or args.check_config:
        return _config_command(args)
    from para.daemon.config import ConfigError, load_config

    config_path, runtime_dir, state_dir = _resolve(args)
    source = f"{config_path} over built-in defaults" if config_path else "built-in defaults"
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"parad: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.print_config:
        from para.daemon.config_doc import render_config
        sys.stdout.write(render_config(config, str(config_path) if config_path else None))
        return 0
    logging.basicConfig(
        level=config.daemon.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s parad[%(process)d] %(levelname)s %(message)s",
    )
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        print(f"parad: cannot create the state dir {state_dir}: {exc.strerror}; make it a writable directory "
              f"or pick another with --state-dir DIR", file=sys.stderr)
        return EXIT_CANNOT_RUN
    return _serve(config, Endpoints(runtime_dir.absolute()), state_dir, source, args.system)


def _config_command(args: argparse.Namespace) -> int:
    """--print-default-config, --check-config FILE: answer and exit, no daemon."""
    from para.daemon.config import ConfigError, load_config

    if args.print_default_config:
        from para.daemon.config_doc import render_default_config
        sys.stdout.write(render_default_config())
        return 0
    try:
        load_config(args.check_config)
    except ConfigError as exc:
        print(f"parad: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    print(f"{args.check_config}: ok")
    return 0


def _serve(config: Config, endpoints: Endpoints, state_dir: Path, source: str, system: bool) -> int:
    from para.daemon import heap, startup
    from para.daemon.isolation import IsolationError
    from para.daemon.journal.opening import JournalError
    from para.daemon.runtime_dir import RuntimeDirError

    heap.return_freed_buffers()
    try:
        return startup.run(config, endpoints, state_dir, source, system=system)
    except (RuntimeDirError, PermissionError, IsolationError, JournalError) as exc:
        print(f"parad: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN


if __name__ == "__main__":
    sys.exit(main())
