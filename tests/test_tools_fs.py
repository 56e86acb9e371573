"""read, glob and grep through a real daemon, on a real tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from para.client import ToolError

FS_POOLS = {name: {"min_workers": 1, "max_workers": 2} for name in ("read", "glob", "grep")}


@pytest.fixture
def fs(start_daemon):
    d = start_daemon(pools=FS_POOLS)
    with d.client() as c:
        yield c


@pytest.fixture(params=["git", "plain"])
def tree(request, tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "build").mkdir()
    (root / ".hidden").mkdir()
    (root / "src" / "main.py").write_text("import os\n\ndef main():\n    return Helper()\n\n# TODO: more\n")
    (root / "src" / "pkg" / "util.py").write_text("class Helper:\n    pass\n")
    (root / "src" / "notes.md").write_text("todo list\nTODO: write docs\n")
    (root / "build" / "gen.py").write_text("def generated():\n    pass\n")
    (root / ".hidden" / "secret.py").write_text("def hidden():\n    pass\n")
    (root / ".gitignore").write_text("build/\n")
    (root / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    if request.param == "git":
        subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def test_glob_honours_gitignore_sorts_and_limits(fs, tree: Path) -> None:
    r = fs.run("glob", patterns=["**/*.py"], root=str(tree))
    assert r.value["files"] == ["src/main.py", "src/pkg/util.py"]
    assert r.value["count"] == 2 and not r.value["truncated"]
    everything = fs.run("glob", patterns=["*.py"], root=str(tree), hidden=True, follow_gitignore=False)
    assert everything.value["files"] == [".hidden/secret.py", "build/gen.py", "src/main.py", "src/pkg/util.py"]
    limited = fs.run("glob", patterns=["*"], root=str(tree), limit=2)
    assert len(limited.value["files"]) == 2 and limited.value["truncated"]
    none = fs.run("glob", patterns=["*.rs"], root=str(tree))
    assert none.ok and none.value["files"] == []


def test_glob_bad_root(fs, tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="does not exist"):
        fs.run("glob", patterns=["*"], root=str(tmp_path / "nope"))
    with pytest.raises(ToolError, match="not absolute"):
        fs.run("glob", patterns=["*"], root="relative/dir")


def test_grep_structured_matches_with_context(fs, tree: Path) -> None:
    r = fs.run("grep", pattern=r"def \w+", path=str(tree), context=1)
    matches = r.value["matches"]
    assert [(m["path"], m["line_number"], m["text"]) for m in matches] == [("src/main.py", 3, "def main():")]
    assert matches[0]["before"] == [""] and matches[0]["after"] == ["    return Helper()"]


def test_grep_case_globs_and_fixed_strings(fs, tree: Path) -> None:
    smart = fs.run("grep", pattern="todo", path=str(tree))
    assert sorted((m["path"], m["line_number"]) for m in smart.value["matches"]) == [
        ("src/main.py", 6), ("src/notes.md", 1), ("src/notes.md", 2)]
    sensitive = fs.run("grep", pattern="todo", path=str(tree), case="sensitive")
    assert [(m["path"], m["line_number"]) for m in sensitive.value["matches"]] == [("src/notes.md", 1)]
    only_py = fs.run("grep", pattern="TODO", path=str(tree), glob=["*.py"])
    assert [m["path"] for m in only_py.value["matches"]] == ["src/main.py"]
    fixed = fs.run("grep", pattern="Helper()", path=str(tree), fixed_strings=True)
    assert [m["text"] for m in fixed.value["matches"]] == ["    return Helper()"]


def test_grep_one_file_limits_and_no_match(fs, tree: Path) -> None:
    one = fs.run("grep", pattern="pass", path=str(tree / "src" / "pkg" / "util.py"))
    assert [(m["path"], m["line_number"]) for m in one.value["matches"]] == [("util.py", 2)]
    capped = fs.run("grep", pattern=".", path=str(tree / "src"), max_results=2)
    assert len(capped.value["matches"]) == 2 and capped.value["truncated"] and capped.value["count"] > 2
    nothing = fs.run("grep", pattern="zzz_nowhere", path=str(tree))
    assert nothing.ok and nothing.value["matches"] == [] and nothing.value["count"] == 0


def test_grep_invalid_regex_is_a_clear_tool_error(fs, tree: Path) -> None:
    with pytest.raises(ToolError, match=r"invalid regex '\(unclosed'"):
        fs.run("grep", pattern="(unclosed", path=str(tree))


def test_read_lines_offset_limit_and_caps(fs, tree: Path) -> None:
    path = str(tree / "src" / "main.py")
    whole = fs.run("read", path=path).value
    assert whole["lines"] == ["import os", "", "def main():", "    return Helper()", "", "# TODO: more"]
    assert whole["eof"] and not whole["truncated"] and not whole["binary"]
    part = fs.run("read", path=path, offset=2, limit=2).value
    assert part["lines"] == ["def main():", "    return Helper()"] and not part["eof"]
    capped = fs.run("read", path=path, max_bytes=12).value
    assert capped["lines"] == ["import os", ""] and capped["truncated"]


def test_read_binary_and_errors(fs, tree: Path) -> None:
    binary = fs.run("read", path=str(tree / "blob.bin")).value
    assert binary["binary"] and binary["lines"] == [] and binary["size"] == 300
    with pytest.raises(ToolError, match="no such file"):
        fs.run("read", path=str(tree / "missing.txt"))
    with pytest.raises(ToolError, match="is a directory"):
        fs.run("read", path=str(tree / "src"))
    with pytest.raises(ToolError, match="not absolute"):
        fs.run("read", path="src/main.py")


def test_read_permission_denied(fs, tree: Path) -> None:
    import os
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    locked = tree / "locked.txt"
    locked.write_text("x")
    locked.chmod(0)
    with pytest.raises(ToolError, match="permission denied"):
        fs.run("read", path=str(locked))


def test_many_reads_in_parallel(fs, tree: Path) -> None:
    files = [str(p) for p in sorted(tree.rglob("*.py"))]
    results = list(fs.map("read", ({"path": f} for f in files * 50)))
    assert [r.value["path"] for r in results] == files * 50 and all(r.ok for r in results)


@pytest.mark.parametrize("patterns, path, expected", [
    (["*.py"], "a/b/c.py", True),
    (["*.py"], "c.pyc", False),
    (["src/*.py"], "src/a.py", True),
    (["src/*.py"], "src/sub/a.py", False),
    (["src/**/*.py"], "src/sub/deep/a.py", True),
    (["src/**/*.py"], "src/a.py", True),
    (["**/test_*.py"], "tests/test_x.py", True),
    (["*.py", "!test_*"], "tests/test_x.py", False),
    (["[ab].txt"], "x/a.txt", True),
    (["[!ab].txt"], "c.txt", True),
    (["[!ab].txt"], "a.txt", False),
    (["?.md"], "docs/a.md", True),
    (["?.md"], "docs/ab.md", False),
    (["a+b(1).txt"], "a+b(1).txt", True),
])
def test_glob_patterns(patterns, path, expected) -> None:
    from para.daemon.tools.globmatch import compile_globs
    assert compile_globs(patterns)(path) is expected


def test_glob_star_does_not_unhide_git_or_ignored_dirs(fs, tree: Path) -> None:
    files = fs.run("glob", patterns=["*"], root=str(tree)).value["files"]
    assert not [f for f in files if f.startswith((".git/", "build/", ".hidden/"))]
    assert "src/notes.md" in files and ".gitignore" not in files
    with_hidden = fs.run("glob", patterns=["*"], root=str(tree), hidden=True).value["files"]
    assert ".hidden/secret.py" in with_hidden and not [f for f in with_hidden if f.startswith(".git/")]


def test_grep_globs_do_not_unhide_ignored_or_hidden_files(fs, tree: Path) -> None:
    r = fs.run("grep", pattern="def ", path=str(tree), glob=["*.py"])
    assert sorted({m["path"] for m in r.value["matches"]}) == ["src/main.py"]
    deep = fs.run("grep", pattern="pass", path=str(tree), glob=["src/**/*.py"])
    assert [m["path"] for m in deep.value["matches"]] == ["src/pkg/util.py"]
    excluded = fs.run("grep", pattern="TODO", path=str(tree), glob=["!*.md"])
    assert [m["path"] for m in excluded.value["matches"]] == ["src/main.py"]


def test_grep_context_goes_to_the_adjacent_match(fs, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("a\nHIT\nb\nc\nHIT\nd\n")
    r = fs.run("grep", pattern="HIT", path=str(tmp_path / "f.txt"), context=1)
    first, second = r.value["matches"]
    assert (first["line_number"], first["before"], first["after"]) == (2, ["a"], ["b"])
    assert (second["line_number"], second["before"], second["after"]) == (5, ["c"], ["d"])
    assert r.stdout == ""  # the answer is in value, not the raw rg output too


def test_read_refuses_a_fifo_instead_of_hanging(fs, tmp_path: Path) -> None:
    import os
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ToolError, match="not a regular file"):
        fs.run("read", path=str(fifo))


def test_grep_capped_answer_agrees_with_the_whole_one(fs, tmp_path: Path) -> None:
    # Past max_results matches are counted, not decoded: the count, the files and the
    # kept matches (context, a line that is not UTF-8) must be what the whole answer says.
    # rg searches files in parallel, so which matches are kept first may differ between runs.
    # A folder of its own: tmp_path also holds the daemon's files, whose log names its
    # runtime dir, a random name that may contain "raw".
    tmp_path = tmp_path / "tree"
    (tmp_path / "sub").mkdir(parents=True)
    for i in range(12):
        (tmp_path / f"top{i}.py").write_text("".join(f"x\nhit {i} {j}\n" for j in range(4)))
        (tmp_path / "sub" / f"low{i}.py").write_text("".join(f"y\nhit {i} {j}\ny\n" for j in range(3)) if i % 2 else "none\n")
        (tmp_path / f"notes{i}.txt").write_text(f"hit {i}\n")
    (tmp_path / "raw.txt").write_bytes(b"hit \xff\xfe raw\n")
    for glob, files in (([], 31), (["sub/*.py"], 6), (["!*.txt"], 18)):
        whole = fs.run("grep", pattern="hit", path=str(tmp_path), context=1, glob=glob).value
        assert whole["files_with_matches"] == files == len({m["path"] for m in whole["matches"]})
        assert whole["count"] == len(whole["matches"]) and not whole["truncated"]
        capped = fs.run("grep", pattern="hit", path=str(tmp_path), context=1, glob=glob, max_results=5).value
        assert (capped["count"], capped["files_with_matches"], capped["truncated"]) == (whole["count"], files, True)
        assert len(capped["matches"]) == 5 and all(m in whole["matches"] for m in capped["matches"])
    raw = fs.run("grep", pattern="raw", path=str(tmp_path)).value["matches"]
    assert [m["text"] for m in raw] == ["hit \ufffd\ufffd raw"]
