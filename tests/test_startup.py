"""Starting para's processes: nothing in the caller's folder runs inside them, and
a state dir or log file that cannot be made ends with one line, not a traceback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from para.testing import alive as _alive, daemons_serving as _daemons_serving, wait_until

MARKER = "SHADOWED-BY-THE-PROJECT"
# Modules para or its dependencies import, as a project folder might hold them.
SHADOWS = ("random", "json", "typing", "select", "socket", "signal", "selectors", "zmq/__init__", "msgpack/__init__",
           "psutil/__init__", "yaml/__init__")


def paractl_command() -> list[str]:
    """paractl as users run it: the console script (which puts its own bin dir, not the cwd, on sys.path)."""
    script = Path(sys.executable).parent / "paractl"
    return [str(script)] if script.is_file() else [sys.executable, "-P", "-m", "para.client.paractl"]


@pytest.fixture
def own_home() -> Iterator[dict[str, str]]:
    """An environment whose HOME, runtime and state dirs are a fresh temp dir, so autostart starts a parad of its own."""
    home = Path(tempfile.mkdtemp(prefix="ph", dir="/tmp"))   # short: socket paths are limited to 107 bytes
    (home / "run").mkdir(mode=0o700)
    env = dict(os.environ, HOME=str(home), XDG_RUNTIME_DIR=str(home / "run"), XDG_STATE_HOME=str(home / "state"),
               XDG_CONFIG_HOME=str(home / "config"))
    env.pop("PARA_SOCKET", None)
    yield env
    rt = home / "run" / "para"
    subprocess.run([*paractl_command(), "shutdown"], env=env, capture_output=True, timeout=60, cwd=home)
    try:
        wait_until(lambda: not _daemons_serving(rt), 30, f"the parad serving {rt} to exit")
    finally:
        for pid in _daemons_serving(rt):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def _startup_modules() -> set[str]:
    """What this interpreter has imported before running any code (site, .pth files: e.g. certifi's random)."""
    r = subprocess.run([sys.executable, "-c", "import sys; print(' '.join(sys.modules))"], capture_output=True,
                       text=True, timeout=60, check=True)
    return set(r.stdout.split())


SHADOWS_AFTER_STARTUP = tuple(n for n in SHADOWS if n.split("/")[0] not in _startup_modules())


def shadowing_project(root: Path, shadows: tuple[str, ...] = SHADOWS) -> Path:
    """A folder whose modules announce themselves if anything imports them."""
    hits = root / "hits"
    for name in shadows:
        path = root / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "import sys\n"
            f"print({MARKER!r}, __name__)\n"
            f"print({MARKER!r}, __name__, file=sys.stderr)\n"
            f"open({str(hits)!r}, 'a').write(__name__ + '\\n')\n"
        )
    (root / "notes.txt").write_text("needle in the project\n")
    return hits


@pytest.mark.parametrize("layout", ["flat", "src on PYTHONPATH"])
def test_code_in_the_callers_folder_never_runs_in_para(own_home: dict[str, str], layout: str) -> None:
    """Neither the folder itself nor a PYTHONPATH entry inside it (`PYTHONPATH=src`) is imported by para."""
    # Where any user may read it: pytest's own temp dirs are root's alone.
    home = Path(own_home["HOME"])
    home.chmod(0o755)
    project = home / "project"
    starter = paractl_command()
    if layout == "flat":
        hits = shadowing_project(project)
    else:
        hits = shadowing_project(project / "src", SHADOWS_AFTER_STARTUP)
        # paractl with PYTHONPATH=src in its environment, which it hands the parad it autostarts. The
        # variable is set once paractl runs: paractl is the caller's own process, and a .pth file may
        # import modules before any of para's code runs; what is checked is that parad never sees src.
        starter = [sys.executable, "-P", "-c",
                   "import os, sys; os.environ['PYTHONPATH'] = 'src'\n"
                   "from para.client.paractl import main; sys.exit(main())"]

    def paractl(*args: str, command: list[str] = paractl_command()) -> subprocess.CompletedProcess:
        r = subprocess.run([*command, *args], env=own_home, cwd=project, capture_output=True, text=True,
                           timeout=120)
        assert MARKER not in r.stdout + r.stderr, f"project code ran in para: {r.stdout}{r.stderr}"
        return r

    found = paractl("glob", "*.py", str(project), command=starter)   # autostarts parad from the project folder
    assert found.returncode == 0, found.stderr
    assert "random.py" in found.stdout or "json.py" in found.stdout
    grep = paractl("grep", "needle", str(hits.parent / "notes.txt"))
    assert grep.returncode == 0 and "needle in the project" in grep.stdout, grep.stderr
    bash = paractl("bash", "--", "echo from bash")
    assert bash.returncode == 0 and bash.stdout == "from bash\n", bash.stderr
    assert not hits.exists(), f"para imported the project's modules: {hits.read_text()}"
    log = Path(own_home["XDG_STATE_HOME"]) / "para" / "parad.log"
    assert MARKER not in log.read_text(errors="replace")


@pytest.mark.parametrize("layout", ["flat", "src on PYTHONPATH"])
@pytest.mark.parametrize("module", ["para.daemon", "para.daemon.forkserver", "para.daemon.worker_entry"])
def test_each_entry_point_drops_the_callers_folder_from_sys_path(tmp_path: Path, module: str, layout: str) -> None:
    """Even started without -P, from a project folder, no entry point imports the project's modules.

    The argument is no descriptor: the process stops right after its imports,
    which is all this checks.
    """
    project = tmp_path / "project"
    env = dict(os.environ)
    if layout == "flat":
        hits = shadowing_project(project)
    else:   # what the interpreter imported before para's code ran is out of the entry point's hands
        hits = shadowing_project(project / "src", SHADOWS_AFTER_STARTUP)
        env["PYTHONPATH"] = "src"
    r = subprocess.run([sys.executable, "-m", module, "--version" if module == "para.daemon" else "no-fd"],
                       cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert MARKER not in r.stdout + r.stderr
    assert not hits.exists(), f"{module} imported the project's modules: {hits.read_text()}"


# ---- a state dir, runtime dir or log file that cannot be made -------------------------

def one_line_error(r: subprocess.CompletedProcess, path: Path) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], r.stderr
    return lines[0]


@pytest.mark.parametrize("where", ["parent is a file", "is a file"])
def test_parad_names_a_state_dir_it_cannot_create(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory\n")
    state = blocker / "state" if where == "parent is a file" else blocker
    rt = tmp_path / "rt"
    r = subprocess.run([sys.executable, "-m", "para.daemon", "--runtime-dir", str(rt), "--state-dir", str(state)],
                       env=dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    line = one_line_error(r, state)
    assert "--state-dir" in line
    assert not rt.exists() or not list(rt.glob("**/*.sock"))


def test_parad_names_a_runtime_dir_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory\n")
    rt = blocker / "rt"
    r = subprocess.run([sys.executable, "-m", "para.daemon", "--runtime-dir", str(rt), "--state-dir", str(tmp_path / "s")],
                       env=dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "--runtime-dir" in one_line_error(r, rt)


@pytest.mark.parametrize("where", ["state home is a file", "log is a directory"])
def test_autostart_names_a_log_file_it_cannot_create(tmp_path: Path, where: str) -> None:
    state_home = tmp_path / "state"
    if where == "state home is a file":
        state_home.write_text("a file, not a directory\n")
        log = state_home / "para" / "parad.log"
    else:
        log = state_home / "para" / "parad.log"
        log.mkdir(parents=True)
    rt = Path(tempfile.mkdtemp(prefix="pa", dir="/tmp"))
    env = dict(os.environ, XDG_STATE_HOME=str(state_home), XDG_CONFIG_HOME=str(tmp_path / "config"))
    try:
        r = subprocess.run([*paractl_command(), "--runtime-dir", str(rt / "para"), "status"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 69, r.stderr
        assert "XDG_STATE_HOME" in one_line_error(r, log)
        assert not _daemons_serving(rt / "para")  # nothing was started
    finally:
        shutil.rmtree(rt, ignore_errors=True)


def test_parad_names_a_runtime_dir_too_deep_for_unix_sockets(tmp_path: Path) -> None:
    rt = tmp_path / ("d" * 60) / ("r" * 60)   # each part fits a file name; its socket paths exceed 107 bytes
    r = subprocess.run([sys.executable, "-m", "para.daemon", "--runtime-dir", str(rt), "--state-dir", str(tmp_path / "s")],
                       env=dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    line = one_line_error(r, rt)
    assert "107" in line and "--runtime-dir" in line
    assert not rt.exists()   # refused before anything was made


def test_parad_names_a_socket_it_cannot_bind_and_cleans_up(tmp_path: Path) -> None:
    """The worker sockets cannot be bound after the control socket was: one line, nothing left listening."""
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o700)
    (rt / "workers").symlink_to("/proc")   # a directory no socket can be made in
    r = subprocess.run([sys.executable, "-m", "para.daemon", "--runtime-dir", str(rt), "--state-dir", str(tmp_path / "s")],
                       env=dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]   # after the usual log lines
    assert last.startswith("parad: ") and str(rt) in last and "--runtime-dir" in last, r.stderr
    assert not (rt / "control.sock").exists() and not (rt / "parad.lock").exists()
