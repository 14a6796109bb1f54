"""``python -m tools.mutation [--project DIR]``: file a finished ``mutmut run`` as reports/mutation/.

Run it where ``mutmut run`` ran (``tox -e mutation`` does both). It writes ``score.json`` (the counts of
``mutmut export-cicd-stats``, with the modules mutated and the tests run, read from that project's
pyproject.toml) and ``survivors.txt`` (``mutmut results``: every mutant that no test killed, by name; ``mutmut
show NAME`` prints one). The README's mutation line is generated from score.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.mutation")
    p.add_argument("--project", type=Path, default=REPO, help="where mutmut ran (default: this checkout)")
    args = p.parse_args(argv)
    mutmut = [sys.executable, "-m", "mutmut"]
    subprocess.run([*mutmut, "export-cicd-stats"], cwd=args.project, check=True, capture_output=True)
    stats = json.loads((args.project / "mutants" / "mutmut-cicd-stats.json").read_text())
    config = tomllib.loads((args.project / "pyproject.toml").read_text())["tool"]["mutmut"]
    results = subprocess.run([*mutmut, "results"], cwd=args.project, check=True, capture_output=True, text=True)
    survivors = [
        line.strip().removesuffix(": survived")
        for line in results.stdout.splitlines()
        if line.strip().endswith(": survived")
    ]
    # Per module, how far the run got: a part-by-part run says which modules it finished.
    every = subprocess.run(
        [*mutmut, "results", "--all", "true"], cwd=args.project, check=True, capture_output=True, text=True
    )
    by_module: dict[str, dict[str, int]] = {}
    for line in every.stdout.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            counts = by_module.setdefault(name.split(".")[1], {})
            counts[status] = counts.get(status, 0) + 1
    out = REPO / "reports" / "mutation"
    out.mkdir(parents=True, exist_ok=True)
    explained = equivalents(out / "equivalent.txt")
    score = {
        "command": "mutmut run, in a project whose [tool.mutmut] is below",
        "only_mutate": config.get("only_mutate", []),
        "tests": config.get("pytest_add_cli_args_test_selection", []),
        "counts": stats,
        "mutation_score": stats["killed"] / max(1, stats["killed"] + stats["survived"]),
        "by_module": dict(sorted(by_module.items())),
        "survivors_explained": sum(name in explained for name in survivors),
        "survivors_unexplained": sum(name not in explained for name in survivors),
    }
    (out / "score.json").write_text(json.dumps(score, indent=1) + "\n")
    (out / "survivors.txt").write_text("".join(f"{name}: {explained.get(name, 'UNEXPLAINED')}\n" for name in survivors))
    print(f"wrote {out}: {stats['killed']} killed, {stats['survived']} survived, {stats.get('no_tests', 0)} untested")
    return 0


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
