"""Credentials stay hidden from commands and read-only tools: those created or replaced after a
worker started, and the host's own secrets, whoever the tools run as."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from para.client import ToolError
from para.sandbox.probe import probe

HOST = probe()
needs_namespaces = pytest.mark.skipif(not HOST.namespaces, reason=f"no namespace isolation here: {HOST.namespaces_error}")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="run_as applies only when parad runs as root")


@needs_namespaces
def test_credentials_created_or_replaced_after_the_workers_started_stay_hidden(start_daemon, tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "home" / "project"
    project.mkdir(parents=True)
    (home / "notes.txt").write_text("public words\n")
    (home / ".netrc").write_text("machine old\n")
    # private_tmp off: this home lies under /tmp, which a private /tmp would hide whole.
    fs = {"writable": [str(project)], "private_tmp": False}
    d = start_daemon(pools={"bash": {"min_workers": 1, "max_workers": 1, "options": {"sandbox": {"filesystem": fs}}},
                            "read": {"min_workers": 1, "max_workers": 1}},
                     env={**os.environ, "HOME": str(home)})  # '~' in the deny list is parad's home
    # The workers are ready: now credentials appear, one new, one saved over the old by rename.
    (home / ".kube").mkdir()
    (home / ".kube" / "config").write_text("KUBE-SECRET\n")
    (home / ".netrc.new").write_text("NETRC-SECRET\n")
    os.rename(home / ".netrc.new", home / ".netrc")
    with d.client() as c:
        r = c.run("bash", command=f"cat {home}/.kube/config; cat {home}/.netrc; cat {home}/notes.txt; "
                                  f"echo made > {project}/out && echo wrote")
        with pytest.raises(ToolError, match="no such file"):
            c.run("read", path=str(home / ".kube" / "config"))
        with pytest.raises(ToolError, match="no such file"):
            c.run("read", path=str(home / ".netrc"))
        notes = c.run("read", path=str(home / "notes.txt")).value["lines"]
    assert "SECRET" not in r.stdout, r
    assert r.stdout == "public words\nwrote\n", r
    assert (project / "out").read_text() == "made\n"   # the writable root under the sealed home stays writable
    assert notes == ["public words"]
