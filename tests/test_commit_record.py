"""Which code a run records (issue 30, cause 6; issue 32, item 6): a module or recipe file the checkout does
not hold in a commit makes the run -dirty, and outside git $TINYMNIST_COMMIT names the code under test.
Real git repositories and real subprocesses."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import train_env

SHA = "0123456789abcdef0123456789abcdef01234567"


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def _commit_all(repo, message):
    """Commit everything in ``repo``; its short commit, as a run records it."""
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "--short=12", "HEAD")


def _repo(path):
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    (path / "README").write_text("a project\n")
    _git(path, "add", "-A")
    _git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    return path, _git(path, "rev-parse", "--short=12", "HEAD")


def _train(cwd, mnist_root, model=None, **env):
    cmd = [sys.executable, "-m", "tinymnist", "train", "--step", "2", "--seeds", "0", "--dry-run", "--quiet"]
    if model:
        cmd += ["--set", f"model={model!r}".replace("'", '"')]
    done = subprocess.run(
        [*cmd, "--out", "o"], cwd=cwd, env={**train_env(mnist_root), **env}, capture_output=True, text=True
    )
    recorded = None
    if (cwd / "o" / "step2" / "seed0.json").exists():
        recorded = json.loads((cwd / "o" / "step2" / "seed0.json").read_text())["git_sha"]
    return done, recorded


def _history_add(cwd, mnist_root):
    cmd = [sys.executable, "-m", "tinymnist", "history", "add", "o", "--store", "s"]
    return subprocess.run(cmd, cwd=cwd, env=train_env(mnist_root), capture_output=True, text=True)


def test_an_uncommitted_module_in_the_checkout_makes_the_run_dirty_and_history_refuses_it(tmp_path, mnist_root):
    repo, sha = _repo(tmp_path / "repo")
    done, recorded = _train(repo, mnist_root)
    assert done.returncode == 0 and recorded == sha  # results (JSON, not code) do not dirty the checkout
    (repo / "mynet.py").write_text("import torch\n")  # a model module never committed
    (repo / "o").rename(repo / "o-clean")
    done, recorded = _train(repo, mnist_root)
    assert done.returncode == 0 and recorded == f"{sha}-dirty", done.stderr
    added = _history_add(repo, mnist_root)
    assert added.returncode == 2 and "-dirty" in added.stderr


def test_a_module_git_ignores_that_the_run_imports_makes_it_dirty(tmp_path, mnist_root):
    """The untracked-file check cannot see a module .gitignore hides; the run's own imports can."""
    repo, _ = _repo(tmp_path / "repo")
    net = "import torch.nn as nn\nfrom tinymnist.models.nets import step2\n\ndef build(**kw):\n    return step2()\n"
    (repo / "kept").mkdir()
    (repo / "kept" / "kept_net.py").write_text(net)
    (repo / ".gitignore").write_text("scratch/\no/\n__pycache__/\n")
    sha = _commit_all(repo, "a committed model")
    (repo / "scratch").mkdir()
    (repo / "scratch" / "scratch_net.py").write_text(net)
    path = os.pathsep.join([str(repo / "kept"), str(repo / "scratch")])
    recorded = {}
    for module in ("kept_net", "scratch_net"):
        shutil.rmtree(repo / "o", ignore_errors=True)
        done, recorded[module] = _train(repo, mnist_root, PYTHONPATH=path, model=f"{module}:build")
        assert done.returncode == 0, done.stderr
    assert recorded == {"kept_net": sha, "scratch_net": f"{sha}-dirty"}
    # The third sweep: an edit git is told not to see (skip-worktree), and a recipe file git ignores.
    (repo / "kept" / "kept_net.py").write_text(net + "# edited\n")
    _git(repo, "update-index", "--skip-worktree", "kept/kept_net.py")
    assert _git(repo, "status", "--porcelain") == ""  # git status is silent about it
    shutil.rmtree(repo / "o", ignore_errors=True)
    done, hidden = _train(repo, mnist_root, PYTHONPATH=path, model="kept_net:build")
    assert done.returncode == 0 and hidden == f"{sha}-dirty", done.stderr
    _git(repo, "update-index", "--no-skip-worktree", "kept/kept_net.py")
    _git(repo, "checkout", "--", "kept/kept_net.py")
    (repo / "scratch" / "r.toml").write_text('name = "r"\nbase = "step2"\n')
    shutil.rmtree(repo / "o", ignore_errors=True)
    cmd = [sys.executable, "-m", "tinymnist", "train", "--recipe", "scratch/r.toml", "--seeds", "0", "--dry-run"]
    done = subprocess.run([*cmd, "--quiet", "--out", "o"], cwd=repo, env=train_env(mnist_root), capture_output=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((repo / "o" / "r" / "seed0.json").read_text())["git_sha"] == f"{sha}-dirty"


def test_a_checkout_of_tinymnist_that_ran_another_copy_of_it_is_dirty(tmp_path, mnist_root):
    """The third independent sweep: in a clone of tinymnist at another commit, a run that imported the installed
    tinymnist recorded the clone's commit, and history add filed it there."""
    repo, _ = _repo(tmp_path / "repo")
    (repo / "src" / "tinymnist").mkdir(parents=True)
    (repo / "src" / "tinymnist" / "__init__.py").write_text("")  # this checkout's own (never imported) package
    sha = _commit_all(repo, "a tinymnist checkout")
    done, recorded = _train(repo, mnist_root)
    assert done.returncode == 0 and recorded == f"{sha}-dirty", done.stderr


def test_a_checkout_whose_installed_tinymnist_is_its_own_code_is_clean(tmp_path, mnist_root):
    """The review of the third sweep's fix: after `pip install .` (the README's install) every run in the clone
    imported the installed copy and was "-dirty", so history add refused every run. A copy whose modules match
    the commit's byte for byte is the commit's code; one module changed, and it is not."""
    import tinymnist

    repo, _ = _repo(tmp_path / "repo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(Path(tinymnist.__file__).parent, repo / "src" / "tinymnist", ignore=ignore)
    sha = _commit_all(repo, "a tinymnist checkout")
    done, recorded = _train(repo, mnist_root)
    assert done.returncode == 0 and recorded == sha, done.stderr
    (repo / "src" / "tinymnist" / "shell.py").write_text("# another version\n")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "the checkout moves on")
    shutil.rmtree(repo / "o")
    done, recorded = _train(repo, mnist_root)
    assert done.returncode == 0 and recorded == _git(repo, "rev-parse", "--short=12", "HEAD") + "-dirty"


def test_outside_git_tinymnist_commit_names_the_code_and_history_accepts_it(tmp_path, mnist_root):
    plain = tmp_path / "plain"
    plain.mkdir()
    done, recorded = _train(plain, mnist_root)
    assert done.returncode == 0 and recorded == "unknown"
    (plain / "o").rename(plain / "o-unknown")
    done, recorded = _train(plain, mnist_root, TINYMNIST_COMMIT=SHA.upper())
    assert done.returncode == 0 and recorded == SHA[:12], done.stderr
    added = _history_add(plain, mnist_root)
    assert added.returncode == 0, added.stderr
    assert (plain / "s" / SHA[:12]).is_dir()


def test_a_bad_or_contradicting_tinymnist_commit_is_one_line_and_exit_2_before_any_data(tmp_path, mnist_root):
    plain = tmp_path / "plain"
    plain.mkdir()
    done, recorded = _train(plain, mnist_root, TINYMNIST_COMMIT="v1.2", MNIST_ROOT=os.devnull)
    assert done.returncode == 2 and recorded is None
    assert done.stderr.strip() == (
        "tinymnist train: error: TINYMNIST_COMMIT='v1.2': not a commit hash (12 to 40 hex digits); set it to the "
        "commit of the code under test (e.g. $GITHUB_SHA), or unset it"
    )
    repo, sha = _repo(tmp_path / "repo")
    done, recorded = _train(repo, mnist_root, TINYMNIST_COMMIT=SHA)
    assert done.returncode == 2 and recorded is None
    assert f"TINYMNIST_COMMIT={SHA[:12]}, but this git checkout is at {sha}" in done.stderr


def test_an_uncommitted_module_anywhere_in_the_checkout_counts_from_a_subfolder_too(tmp_path):
    """git pathspecs are relative to the current folder: a run started in a subfolder missed ../top.py."""
    repo, sha = _repo(tmp_path / "repo")
    (repo / "sub").mkdir()
    (repo / "top.py").write_text("x = 1\n")
    code = "from tinymnist.results import git_sha; print(git_sha())"
    done = subprocess.run([sys.executable, "-c", code], cwd=repo / "sub", capture_output=True, text=True)
    assert done.stdout.strip() == f"{sha}-dirty", done.stderr


def test_a_module_git_ignores_first_imported_while_training_makes_the_run_dirty(tmp_path, mnist_root):
    """The eighth independent sweep: the commit was read when the run started, so a committed forward that
    imports an ignored helper only at a later batch recorded the clean commit, and history add filed it."""
    repo, _ = _repo(tmp_path / "repo")
    net = (
        "from tinymnist.models.nets import step2\n\nclass Late(type(step2())):\n    calls = 0\n\n"
        "    def forward(self, x):\n        Late.calls += 1\n        if Late.calls > 4:  # past the probes: training\n"
        "            import late_helper  # noqa: F401\n        return super().forward(x)\n\n"
        "def build(**kw):\n    return Late()\n"
    )
    (repo / "kept").mkdir()
    (repo / "kept" / "late_net.py").write_text(net)
    (repo / ".gitignore").write_text("scratch/\no/\n__pycache__/\n")
    sha = _commit_all(repo, "a committed model")
    (repo / "scratch").mkdir()
    (repo / "scratch" / "late_helper.py").write_text("SCALE = 1.0\n")
    path = os.pathsep.join([str(repo / "kept"), str(repo / "scratch")])
    done, recorded = _train(repo, mnist_root, PYTHONPATH=path, model="late_net:build")
    assert done.returncode == 0 and recorded == f"{sha}-dirty", (recorded, done.stderr)
    assert _history_add(repo, mnist_root).returncode == 2
    # the ninth: an ignored file run without an import (exec_module of a spec from its path) is no commit's either
    loader = (
        "import importlib.util, os\nfrom tinymnist.models.nets import step2\n\ndef build(**kw):\n"
        "    path = os.path.join(os.environ['SCRATCH'], 'late_helper.py')\n"
        "    spec = importlib.util.spec_from_file_location('not_a_module_name', path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n    return step2()\n"
    )
    (repo / "kept" / "loader_net.py").write_text(loader)
    sha = _commit_all(repo, "a loader")
    shutil.rmtree(repo / "o")
    env = {"PYTHONPATH": path, "SCRATCH": str(repo / "scratch")}
    done, recorded = _train(repo, mnist_root, model="loader_net:build", **env)
    assert done.returncode == 0 and recorded == f"{sha}-dirty", (recorded, done.stderr)
    # the tenth: a file read by a bytes path and run as a string, and a module imported from an ignored zip
    import zipfile

    with zipfile.ZipFile(repo / "scratch" / "helpers.zip", "w") as z:
        z.writestr("zhelper.py", "K = 1\n")
    runner = (
        "import os, sys\nfrom tinymnist.models.nets import step2\n\ndef build(**kw):\n"
        "    scratch = os.environ['SCRATCH']\n"
        "    if os.environ['HOW'] == 'bytes':\n"
        "        exec(open(os.fsencode(os.path.join(scratch, 'late_helper.py'))).read())\n"
        "    else:\n        sys.path.insert(0, os.path.join(scratch, 'helpers.zip'))\n        import zhelper  # noqa: F401\n"
        "    return step2()\n"
    )
    (repo / "kept" / "runner_net.py").write_text(runner)
    sha = _commit_all(repo, "a runner")
    for how in ("bytes", "zip"):
        shutil.rmtree(repo / "o")
        done, recorded = _train(repo, mnist_root, model="runner_net:build", **env, HOW=how)
        assert done.returncode == 0 and recorded == f"{sha}-dirty", (how, recorded, done.stderr)


def test_only_an_environments_own_site_packages_in_the_checkout_count_as_installed(tmp_path):
    """The eleventh independent sweep: an ignored ``vendor/site-packages`` of the user's own code passed as
    installed, so a run importing it recorded the clean commit. Inside a checkout, installed means inside a
    virtual environment (a .tox or .venv, known by its pyvenv.cfg)."""
    from tinymnist.errors import is_installed

    top = os.path.realpath(tmp_path) + os.sep
    venv = tmp_path / ".venv"
    (venv / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    vendored = os.path.join(top, "vendor", "site-packages", "helper.py")
    assert not is_installed(vendored, within=top)
    assert is_installed(os.path.join(top, ".venv", "lib", "python3.11", "site-packages", "x.py"), within=top)
    assert is_installed(vendored)  # outside any checkout, the folder's name is all there is to go by


def test_a_bisect_runs_each_commits_own_copy_of_a_model_folder_on_pythonpath(tmp_path):
    """The eleventh independent sweep: a model folder inside the checkout on an absolute PYTHONPATH was
    imported from the checkout by every commit's jobs, so an old commit was filed with today's model. The
    folder is mapped into each commit's worktree; one outside the checkout is left as it is."""
    from types import SimpleNamespace

    from tinymnist.bisection import Bisector

    repo, _ = _repo(tmp_path / "repo")
    (repo / "models").mkdir()
    wt = tmp_path / "wt"
    outside = str(tmp_path / "elsewhere")
    got = Bisector._in_worktree(SimpleNamespace(repo=repo), os.pathsep.join([str(repo / "models"), outside, "rel"]), wt)
    assert got == [str(wt / "models"), outside, "rel"]
