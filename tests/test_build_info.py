"""Where `trueconf_exporter_build_info{revision}` comes from: a checkout's HEAD read from its files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from exporter.build import _checkout_head, server_name

ROOT = Path(__file__).resolve().parent.parent


def test_the_revision_of_this_checkout_is_what_git_says():
    said = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert _checkout_head(ROOT / ".git") == said.stdout.strip()


def test_a_branch_only_in_packed_refs_and_a_detached_head(tmp_path):
    git = tmp_path / ".git"
    git.mkdir()
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text("# pack-refs with: peeled\n" + "a" * 40 + " refs/heads/main\n")
    assert _checkout_head(git) == "a" * 40
    (git / "HEAD").write_text("b" * 40 + "\n")
    assert _checkout_head(git) == "b" * 40


def test_no_checkout_is_no_revision(tmp_path):
    assert _checkout_head(tmp_path / ".git") is None


def test_the_server_header_names_the_exporter_only():
    assert server_name().startswith("trueconf-exporter/")
    assert "Python" not in server_name() and "WSGI" not in server_name()


def test_a_worktree_names_its_own_head_and_reads_the_shared_refs(tmp_path):
    """A `git worktree`'s `.git` is a file: `gitdir: <main>/.git/worktrees/<name>`, whose `commondir` is the
    main git directory holding the branches."""
    main = tmp_path / "main" / ".git"
    own = main / "worktrees" / "wt"
    own.mkdir(parents=True)
    (main / "refs" / "heads").mkdir(parents=True)
    (main / "refs" / "heads" / "work").write_text("c" * 40 + "\n")
    (own / "HEAD").write_text("ref: refs/heads/work\n")
    (own / "commondir").write_text("../..\n")
    checkout = tmp_path / "wt"
    checkout.mkdir()
    (checkout / ".git").write_text(f"gitdir: {own}\n")
    assert _checkout_head(checkout / ".git") == "c" * 40
    (checkout / ".git").write_text("gitdir: ../main/.git/worktrees/wt\n")  # git may write it relative
    assert _checkout_head(checkout / ".git") == "c" * 40
