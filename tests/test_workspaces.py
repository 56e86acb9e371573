"""Workspaces through a real daemon: a command writes in its own project and nowhere else,
workers stay warm per workspace, and only folders the policy allows become workspaces."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from para.client import InvalidRequest, ParaError
from para.daemon.workspaces import WorkspaceError, WorkspacePolicy
from para.sandbox.probe import probe
from para.testing import paractl, wait_until

HOST = probe()
needs_namespaces = pytest.mark.skipif(not HOST.namespaces, reason=f"no namespace isolation here: {HOST.namespaces_error}")


def only_the_workspace(**pool) -> dict:
    """A bash pool whose commands may write in their workspace ('.') alone."""
    return {"bash": {"min_workers": 1, "max_workers": 2, **pool,
                     "options": {"sandbox": {"filesystem": {"writable": ["."]}}}}}


@pytest.fixture
def projects(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two projects and the folder parad starts in, side by side under a fresh folder outside pytest's tree
    (pytest's basetemp is writable to every test pool)."""
    base = Path(tempfile.mkdtemp(prefix="para-ws-", dir="/var/tmp"))
    folders = tuple(base / name for name in ("app", "lib", "start"))
    for folder in folders:
        folder.mkdir()
    yield folders
    shutil.rmtree(base, ignore_errors=True)


@needs_namespaces
def test_a_command_writes_in_its_workspace_and_nowhere_else(start_daemon, projects) -> None:
    app, lib, start = projects
    d = start_daemon(pools=only_the_workspace(), cwd=start)
    with d.client() as c:
        home = c.run("bash", command="pwd && echo made > mine", workspace=str(app))
        across = c.run("bash", command=f"echo bad > {lib}/theirs", workspace=str(app))
        started = c.run("bash", command=f"echo bad > {start}/file", workspace=str(app))
        default = c.run("bash", command="pwd && echo here > default", workspace=None, cwd=None)
    assert home.ok and home.stdout == f"{app}\n"
    assert (app / "mine").read_text() == "made\n"
    assert across.exit_code != 0 and "Read-only file system" in across.stderr and not (lib / "theirs").exists()
    assert started.exit_code != 0 and not (start / "file").exists()
    # A task that names no workspace runs where parad started, as before workspaces.
    assert default.ok and default.stdout == f"{start}\n" and (start / "default").read_text() == "here\n"


@needs_namespaces
def test_workers_stay_warm_per_workspace_and_status_lists_them(start_daemon, projects) -> None:
    app, lib, start = projects
    d = start_daemon(pools=only_the_workspace(), cwd=start)
    with d.client() as c:
        first = c.run("bash", command="echo 1 > one", workspace=str(app))
        second = c.run("bash", command="cat one", workspace=str(app))
        other = c.run("bash", command="pwd", workspace=str(lib))
        status = c.status()
    assert first.ok and second.ok and second.stdout == "1\n"
    assert first.worker == second.worker          # the warm sandbox of app, reused
    assert other.ok and other.stdout == f"{lib}\n" and other.worker != first.worker
    listed = {w["workspace"]: w for w in status["workspaces"]}
    assert {str(app), str(lib)} <= set(listed)
    assert listed[str(app)]["writable"] == [str(app)] and listed[str(app)]["pools"]["bash"]["workers"] >= 1
    out = paractl(d, "status").stdout
    assert "workspaces:" in out and f"writable: {app}" in out


@needs_namespaces
def test_workspaces_take_turns_in_a_pool_at_its_size(start_daemon, projects) -> None:
    # One worker for the pool: each new workspace's task waits for the other's idle worker to give way.
    app, lib, start = projects
    d = start_daemon(pools=only_the_workspace(min_workers=1, max_workers=1), cwd=start)
    with d.client() as c:
        tasks = [c.submit("bash", command="pwd", workspace=str(ws)) for ws in (app, lib, app, lib)]
        results = [t.result(timeout=120) for t in tasks]
        workers = c.workers()
    assert [r.stdout for r in results] == [f"{ws}\n" for ws in (app, lib, app, lib)]
    assert len([w for w in workers if w["state"] != "stopping"]) <= 1


@pytest.mark.parametrize(("folder", "message"), [
    ("/", "system folder"), ("/etc", "system folder"), ("/usr/lib", "system folder"), ("/tmp", "system folder"),
    ("relative/path", "not an absolute path"), ("/nonexistent-para-ws", "No such file"),
])
def test_a_folder_that_may_not_be_a_workspace_is_refused(shared_daemon, folder: str, message: str) -> None:
    with shared_daemon.client() as c:
        with pytest.raises(InvalidRequest, match=message):
            c.run("bash", command="true", workspace=folder)


def test_the_home_folder_itself_is_no_workspace_but_a_project_in_it_is(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "src" / "app").mkdir(parents=True)
    policy = WorkspacePolicy(owned=True, home=str(home))
    with pytest.raises(WorkspaceError, match="home folder"):
        policy.check(str(home))
    assert policy.check(str(home / "src" / "app")) == str(home / "src" / "app")
    link = tmp_path / "link"
    link.symlink_to(home / "src" / "app")
    assert policy.check(str(link)) == str(home / "src" / "app")   # resolved: the sandbox binds the real path


def test_a_folder_of_another_user_needs_a_root(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    someone_else = WorkspacePolicy(owned=True, uid=os.geteuid() + 1)   # a parad of another user
    with pytest.raises(WorkspaceError, match=f"belongs to uid {os.geteuid()}, not to parad's user"):
        someone_else.check(str(mine))
    assert WorkspacePolicy(owned=True, uid=os.geteuid() + 1, roots=(str(tmp_path),)).check(str(mine)) == str(mine)
    # The system service takes none but under its roots.
    with pytest.raises(WorkspaceError, match="daemon.workspaces.roots"):
        WorkspacePolicy(owned=False).check(str(mine))


def test_a_system_service_refuses_unlisted_workspaces(start_daemon, projects) -> None:
    app, lib, start = projects
    d = start_daemon(pools=only_the_workspace(), daemon={"workspaces": {"owned": False, "roots": [str(app)]}}, cwd=start)
    with d.client() as c:
        assert c.run("bash", command="pwd", workspace=str(app)).stdout == f"{app}\n"
        with pytest.raises(InvalidRequest, match="not under daemon.workspaces.roots"):
            c.run("bash", command="pwd", workspace=str(lib))


@needs_namespaces
def test_paractl_works_in_the_project_it_is_run_from(start_daemon, projects) -> None:
    # The project is the git top level of paractl's folder: writable from any folder inside it.
    app, lib, start = projects
    (app / ".git").mkdir()
    (app / "src").mkdir()
    d = start_daemon(pools=only_the_workspace(), cwd=start)
    here = paractl(d, "bash", "--", "pwd; echo made > file; echo top > ../top", cwd=app / "src")
    elsewhere = paractl(d, "bash", "--", f"echo bad > {lib}/file", cwd=app / "src")
    plain = paractl(d, "bash", "--", "pwd; echo made > file", cwd=lib)
    assert here.returncode == 0, here.stderr
    assert here.stdout == f"{app / 'src'}\n" and (app / "src" / "file").exists() and (app / "top").exists()
    assert elsewhere.returncode != 0 and "Read-only file system" in elsewhere.stderr
    assert plain.returncode == 0 and plain.stdout == f"{lib}\n" and (lib / "file").exists()   # no git: the folder itself


@needs_namespaces
def test_a_batch_runs_in_the_workspace_it_was_sent_from(start_daemon, projects, tmp_path: Path) -> None:
    app, lib, start = projects
    batch = tmp_path / "batch.yaml"
    batch.write_text("tasks:\n  - id: write\n    tool: bash\n    args: {command: 'pwd; echo ok > batch-made'}\n")
    d = start_daemon(pools=only_the_workspace(), cwd=start)
    done = paractl(d, "batch", str(batch), cwd=app)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (app / "batch-made").read_text() == "ok\n"


def test_a_callers_project_is_its_git_top_level_else_its_folder(tmp_path: Path, monkeypatch) -> None:
    from para.client.context import project_of
    home = tmp_path / "home"
    (home / ".git").mkdir(parents=True)            # a repository of the whole home folder (dotfiles)
    (home / "src" / "app" / ".git").mkdir(parents=True)
    (home / "src" / "app" / "pkg").mkdir()
    (home / "notes").mkdir()
    monkeypatch.setenv("HOME", str(home))
    project_of.cache_clear()
    assert project_of(str(home / "src" / "app" / "pkg")) == str(home / "src" / "app")
    assert project_of(str(home / "notes")) == str(home / "notes")    # the dotfiles repository is no project
    assert project_of(str(home)) is None
    assert project_of("/") is None
    project_of.cache_clear()


# ---- what a review of the first version found ------------------------------------------

PARACTL = f"{sys.executable} -P -m para.client.paractl"


@needs_namespaces
def test_a_nested_task_cannot_widen_what_its_command_may_write(start_daemon, projects) -> None:
    app, lib, start = projects
    d = start_daemon(pools=only_the_workspace(max_workers=3), cwd=start)
    with d.client() as c:
        widened = c.run("bash", workspace=str(app), timeout=60,
                        command=f"{PARACTL} run bash command='echo bad > {lib}/nested' workspace={lib}")
        inherited = c.run("bash", workspace=str(app), timeout=60,
                          command=f"mkdir -p sub && cd sub && {PARACTL} bash -- 'pwd; echo ok > ../child-wrote'")
    assert widened.exit_code != 0 and "outside the parent task's" in widened.stderr and not (lib / "nested").exists()
    # A nested client sends no workspace: its child works in the parent's, from its own folder.
    assert inherited.ok, inherited.stderr
    assert inherited.stdout == f"{app / 'sub'}\n" and (app / "child-wrote").read_text() == "ok\n"


@needs_namespaces
def test_a_workspace_made_a_symlink_after_admission_gets_no_worker(start_daemon, projects) -> None:
    # The only worker is busy while the queued task's folder is swapped for a link to /var/tmp.
    app, lib, start = projects
    d = start_daemon(pools=only_the_workspace(min_workers=1, max_workers=1), cwd=start)
    busy = start / "busy"
    busy.mkdir()
    with d.client() as c:
        blocker = c.submit("bash", command="sleep 1", workspace=str(busy))
        wait_until(lambda: any(t["state"] == "running" for t in c.ps()), 30, "the blocker to run")
        escaped = Path("/var/tmp") / f"escaped-{os.getpid()}-{id(c)}"
        swapped = c.submit("bash", command=f"pwd; echo x > {escaped.name}", workspace=str(lib))
        shutil.rmtree(lib)
        lib.symlink_to("/var/tmp")
        blocker.result(timeout=60)
        outcome = wait_outcome(swapped)
        after = c.run("bash", command="echo still", workspace=str(app))
    assert outcome.status == "failed" and outcome.error.startswith("not started") and "'/var/tmp'" in outcome.error
    assert not escaped.exists()
    assert after.stdout == "still\n"   # the pool did not fail with it


@needs_namespaces
def test_a_deleted_workspace_fails_its_own_tasks_not_the_pool(start_daemon, projects) -> None:
    app, lib, start = projects
    d = start_daemon(pools=only_the_workspace(min_workers=1, max_workers=1, crash_limit=2), cwd=start)
    busy = start / "busy"
    busy.mkdir()
    with d.client() as c:
        blocker = c.submit("bash", command="sleep 1", workspace=str(busy))
        wait_until(lambda: any(t["state"] == "running" for t in c.ps()), 30, "the blocker to run")
        doomed = c.submit("bash", command="true", workspace=str(lib))
        shutil.rmtree(lib)
        blocker.result(timeout=60)
        outcome = wait_outcome(doomed)
        after = c.run("bash", command="echo still", workspace=str(app))
        state = next(p for p in c.status()["pools"] if p["name"] == "bash")["state"]
    assert outcome.status == "failed" and "No such file" in outcome.error
    assert after.stdout == "still\n" and state == "ok"


@needs_namespaces
def test_idle_workers_of_another_workspace_give_way_to_a_backlog(start_daemon, projects) -> None:
    # Two warm workers of parad's folder, room for one more: the project's backlog gets all three.
    app, lib, start = projects
    d = start_daemon(pools=only_the_workspace(min_workers=2, max_workers=3, credit=1), cwd=start)
    with d.client() as c:
        wait_until(lambda: len([w for w in c.workers() if w["state"] == "ready"]) == 2, 30, "two warm workers")
        tasks = [c.submit("bash", command="sleep 0.5; echo $$", workspace=str(app)) for _ in range(6)]
        wait_until(lambda: sum(1 for w in c.workers() if w["workspace"] == str(app) and w["tasks"]) == 3, 30,
                   "three workers of the project running its tasks at once")
        assert all(t.result(timeout=60).ok for t in tasks)


@needs_namespaces
def test_two_workspaces_sharing_one_worker_take_turns(start_daemon, projects) -> None:
    app, lib, start = projects
    d = start_daemon(pools=only_the_workspace(min_workers=1, max_workers=1, credit=1), cwd=start)
    with d.client() as first, d.client() as second:
        backlog = [first.submit("bash", command="sleep 0.2; date +%s.%N", workspace=str(app)) for _ in range(8)]
        wait_until(lambda: any(t["state"] == "running" for t in first.ps()), 30, "the backlog to start")
        single = float(second.submit("bash", command="date +%s.%N", workspace=str(lib)).result(timeout=60).stdout)
        ends = [float(t.result(timeout=60).stdout) for t in backlog]
    before = sum(1 for end in ends if end < single)
    assert before <= 4, f"the other workspace's task ran after {before} of the 8 queued before it"


@needs_namespaces
def test_a_pinned_pool_serves_a_new_workspace(start_daemon, projects) -> None:
    app, lib, start = projects
    d = start_daemon(pools=only_the_workspace(min_workers=1, max_workers=2), cwd=start)
    with d.client() as c:
        c.scale("bash", 1)
        assert c.run("bash", command="pwd", workspace=str(app), timeout=60).stdout == f"{app}\n"
        assert len([w for w in c.workers() if w["state"] != "stopping"]) <= 1


def test_an_unreadable_workspace_is_refused_before_it_reaches_a_worker(start_daemon, projects) -> None:
    app, lib, start = projects
    d = start_daemon(pools=only_the_workspace(), cwd=start)
    locked = app / "locked"
    locked.mkdir(mode=0)
    try:
        policy = WorkspacePolicy(owned=True)
        if os.access(locked, os.R_OK | os.X_OK):   # root reads anything: the check is for other users' parads
            pytest.skip("this user reads a mode-000 folder (root): parad's own access check cannot refuse it")
        with pytest.raises(WorkspaceError, match="cannot be read"):
            policy.check(str(locked))
    finally:
        locked.chmod(0o700)


def wait_outcome(task, timeout: float = 60):
    """The task's Result, failed or not."""
    try:
        task.result(timeout=timeout)
    except ParaError:
        pass
    return task.outcome()
