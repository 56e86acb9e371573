"""para-mcp: serve para's tools to AI agents over the Model Context Protocol (also `paractl mcp`).

    para-mcp                                # stdio: what an agent's MCP config starts
    para-mcp --http 127.0.0.1:8765          # streamable HTTP at http://127.0.0.1:8765/mcp (port 0: any free one)
    para-mcp --http ADDR --token-file FILE  # ... whose clients send `Authorization: Bearer <FILE's first line>`
    para-mcp --runtime-dir DIR              # the parad of DIR (default: this user's, started if none runs)
    para-mcp --cwd DIR                      # tasks run in DIR, not in the directory it was started in

The directory it is started in (or --cwd) is every task's: bash runs there (its project is
the workspace, as for paractl), relative paths of read, grep and glob resolve
there. Tasks get this process's environment, filtered by the pool's sandbox policy.
It stops on stdin's EOF (stdio), SIGTERM or SIGINT, and cancels the tasks it
started that still run: nothing it started outlives it.

Over HTTP every request needs `Authorization: Bearer TOKEN` (any local user can
reach a loopback port). TOKEN is the first line of --token-file FILE (a file
only its user may read), else $PARA_MCP_TOKEN, else a new one written to
RUNTIME_DIR/mcp-token-PORT (mode 0600, removed on exit), named on stderr.

Exit codes: 0 stopped; 1 the HTTP address cannot be had; 2 usage; 69 no parad
answers and none could be started (EX_UNAVAILABLE).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import anyio
from mcp.server.lowlevel import Server

from para.client import AsyncClient, DaemonUnavailable
from para.mcp_server.auth import Token, TokenError, generated_token, given_token
from para.mcp_server.server import ParaServer
from para.mcp_server.tasks import TaskBook
from para.mcp_server.transports import UsageError, listen, parse_address, serve_http, serve_stdio, url_of

EX_ADDRESS, EX_USAGE, EX_UNAVAILABLE = 1, 2, 69


def build_parser(prog: str = "para-mcp") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http", metavar="HOST:PORT", help="serve streamable HTTP on this loopback address instead of stdio")
    p.add_argument("--token-file", metavar="FILE", help="with --http: the bearer token clients must send is this "
                                                          "file's first line (default: $PARA_MCP_TOKEN, else a new one)")
    p.add_argument("--cwd", metavar="DIR", help="the directory tasks run in (default: the current one), for clients "
                                                "that start servers elsewhere than the project")
    p.add_argument("--runtime-dir", metavar="DIR", type=Path,
                   help="parad's runtime directory (default: $XDG_RUNTIME_DIR/para, as paractl)")
    p.add_argument("--no-autostart", action="store_true", help="exit 69 instead of starting parad when none runs")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="what goes to stderr (default: warning)")
    return p


def main(argv: list[str] | None = None, prog: str = "para-mcp") -> int:
    """Run the server until it is stopped; its exit code."""
    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(), format=f"{prog}: %(message)s")
    try:
        address = parse_address(args.http) if args.http else None
        if args.token_file is not None and address is None:
            raise UsageError("--token-file is for --http: stdio needs no token")
        token = given_token(args.token_file)   # also takes PARA_MCP_TOKEN out of what tasks get
        if args.cwd is not None:
            args.runtime_dir = args.runtime_dir and args.runtime_dir.absolute()   # as typed, from where it was typed
            _chdir(args.cwd)
    except (UsageError, TokenError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EX_USAGE
    try:
        return anyio.run(_serve, args, address, token, prog)
    except KeyboardInterrupt:   # before the signal handlers were in place
        return 130


def _chdir(path: str) -> None:
    try:
        os.chdir(path)
    except OSError as exc:
        raise UsageError(f"--cwd {path}: {exc.strerror}; name the project directory tasks should run in") from None


async def _serve(args: argparse.Namespace, address: tuple[str, int] | None, token: Token | None, prog: str) -> int:
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signals, stop)
        try:
            return await _run(args, address, token, stop, prog)
        except (DaemonUnavailable, TokenError) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return EX_USAGE if isinstance(exc, TokenError) else EX_UNAVAILABLE
        except OSError as exc:   # the HTTP address is taken, or not ours
            print(f"{prog}: cannot listen on {args.http}: {exc.strerror or exc}", file=sys.stderr)
            return EX_ADDRESS
        finally:
            tg.cancel_scope.cancel()


async def _run(args: argparse.Namespace, address: tuple[str, int] | None, token: Token | None, stop: anyio.Event,
               prog: str) -> int:
    cwd = os.getcwd()
    client = AsyncClient(args.runtime_dir, autostart=not args.no_autostart, name="para-mcp")
    try:
        await client.connect()
        async with TaskBook(client) as book:
            para = ParaServer(client, book, cwd)
            await para.refresh()
            if address is None:
                await serve_stdio(para.lowlevel(), stop)
            else:
                await _serve_http(para.lowlevel(), address, token, client.endpoints.runtime_dir, stop, prog)
    finally:
        await client.close()
    return 0


async def _serve_http(server: Server, address: tuple[str, int], token: Token | None, runtime_dir: Path,
                      stop: anyio.Event, prog: str) -> None:
    host = address[0]
    with listen(*address) as sock, contextlib.ExitStack() as stack:
        if token is None:
            token = stack.enter_context(generated_token(runtime_dir, sock.getsockname()[1]))
        # One write: a reader that sees the URL sees where the token is too.
        print(f"{prog}: serving MCP at {url_of(host, sock)}\n"
              f"{prog}: clients send 'Authorization: Bearer TOKEN', TOKEN being {token.where}", file=sys.stderr,
              flush=True)
        await serve_http(server, host, sock, token, stop)


async def _stop_on_signals(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stop.set()


if __name__ == "__main__":
    sys.exit(main())
