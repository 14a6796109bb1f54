"""``python -m tools.mutation [--project DIR]``: file a ``mutmut run`` as reports/mutation/.

Run it where ``mutmut run`` ran (``tox -e mutation`` does both). Runs can be made part by part (``mutmut run
"tinymnist.verdict.*"``) and are filed module by module: a module this run checked replaces its filed entry
(counts, the commit it ran on, the tests it ran, the seconds its mutants' tests took), and a module it did not
reach keeps the entry of the run that did. It writes ``score.json`` (per module, and summed) and
``survivors.txt`` (every mutant that no test killed, by name, with its line from ``equivalent.txt`` or
UNEXPLAINED; ``mutmut show NAME`` prints one). The README's mutation line is generated from score.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "reports" / "mutation"
NOT_RUN = "not checked"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.mutation")
    p.add_argument("--project", type=Path, default=REPO, help="where mutmut ran (default: this checkout)")
    args = p.parse_args(argv)
    mutmut = [sys.executable, "-m", "mutmut"]
    config = tomllib.loads((args.project / "pyproject.toml").read_text())["tool"]["mutmut"]
    every = subprocess.run(
        [*mutmut, "results", "--all", "true"], cwd=args.project, check=True, capture_output=True, text=True
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=args.project, check=True, capture_output=True, text=True
    ).stdout.strip()
    run = module_statuses(every.stdout)
    filed = json.loads((OUT / "score.json").read_text()) if (OUT / "score.json").exists() else {}
    tests = config.get("pytest_add_cli_args_test_selection", [])
    modules = merge(filed, run, commit, tests, test_seconds(args.project / "mutants"))
    OUT.mkdir(parents=True, exist_ok=True)
    explained = equivalents(OUT / "equivalent.txt")
    survivors = sorted(name for m in modules.values() for name in m["survivors"])
    counts: dict[str, int] = {}
    for m in modules.values():
        for status, n in m["counts"].items():
            counts[status] = counts.get(status, 0) + n
    killed, survived = counts.get("killed", 0), counts.get("survived", 0)
    score = {
        "schema_version": 2,
        "command": "mutmut run [NAMES], in a clone whose [tool.mutmut] names the tests each module lists",
        "only_mutate": config.get("only_mutate", []),
        "modules": modules,
        "counts": dict(sorted(counts.items())),
        "total": sum(counts.values()),
        "mutation_score": killed / max(1, killed + survived),
        "survivors_explained": sum(name in explained for name in survivors),
        "survivors_unexplained": sum(name not in explained for name in survivors),
    }
    (OUT / "score.json").write_text(json.dumps(score, indent=1) + "\n")
    (OUT / "survivors.txt").write_text("".join(f"{name}: {explained.get(name, 'UNEXPLAINED')}\n" for name in survivors))
    print(f"wrote {OUT}: {killed} killed, {survived} survived, {counts.get(NOT_RUN, 0)} not run")
    return 0


def module_statuses(results: str) -> dict[str, dict[str, str]]:
    """``mutmut results --all true`` lines (``tinymnist.MODULE.x_fn__mutmut_N: STATUS``), by module."""
    by_module: dict[str, dict[str, str]] = {}
    for line in results.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.count(".") >= 2:
            by_module.setdefault(name.split(".")[1], {})[name] = status
    return by_module


def test_seconds(mutants: Path) -> dict[str, float]:
    """Per module, the seconds its mutants' test runs took, each mutant as it was last run (mutmut keeps them in
    ``mutants/src/<package>/<module>.py.meta``): what running that module again costs one core."""
    seconds: dict[str, float] = {}
    for meta in sorted(mutants.glob("src/**/*.py.meta")):
        durations = json.loads(meta.read_text()).get("durations_by_key", {})
        if durations:
            seconds[meta.name.removesuffix(".py.meta")] = sum(durations.values())
    return seconds


def merge(
    filed: dict[str, Any],
    run: dict[str, dict[str, str]],
    commit: str,
    tests: list[str],
    seconds: dict[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """The filed modules, with each module this run checked at all replaced by this run's entry."""
    modules: dict[str, dict[str, Any]] = dict(filed.get("modules", {}))
    for module, statuses in run.items():
        if module in modules and all(s == NOT_RUN for s in statuses.values()):
            continue  # not reached by this run: the filed entry stands
        counts: dict[str, int] = {}
        for status in statuses.values():
            counts[status] = counts.get(status, 0) + 1
        modules[module] = {
            "commit": commit,
            "tests": list(tests),
            "counts": dict(sorted(counts.items())),
            "survivors": sorted(name for name, s in statuses.items() if s == "survived"),
        }
        if seconds and module in seconds:
            modules[module]["test_seconds"] = round(seconds[module])
    return dict(sorted(modules.items()))


def equivalents(path: Path) -> dict[str, str]:
    """``NAME: why`` lines (``#`` comments and blank lines skipped): the survivors no test can kill."""
    if not path.exists():
        return {}
    explained: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, why = line.partition(": ")
        if not sep or not why.strip():
            sys.exit(f"{path}:{number}: not 'NAME: why'; give each equivalent mutant one line saying why")
        explained[name] = why
    return explained


if __name__ == "__main__":
    sys.exit(main())
