"""What CI dashboards read: JUnit XML (one test case per judged thing) and markdown job summaries.

Both are rendered from the one verdict (``tinymnist.verdict``) and compare's rows; nothing here judges. The
JUnit layout is the one GitHub's test reporters, GitLab and Jenkins read (testsuites > testsuite > testcase,
with failure or error children and properties), written atomically like every other results file.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

MAX_SUMMARY_BYTES = 1 << 20  # GitHub's limit for one step's $GITHUB_STEP_SUMMARY


@dataclass(frozen=True)
class Case:
    classname: str
    name: str
    seconds: float
    failure: str | None = None  # a gate or a comparison failed: its one line
    error: str | None = None  # not a result at all (a diverged or unfinished run)
    skipped: str | None = None  # not judged (a smoke run): never a green case
    properties: dict[str, object] = field(default_factory=dict)


def _xml_text(text: str) -> str:
    """``text`` as XML 1.0 can hold it: a control character other than tab and line breaks (a path named
    "n\\x01ew" in a message made the file unreadable: the sixth independent sweep of issue 30), a surrogate
    escape of a byte that was not UTF-8, or U+FFFE/U+FFFF is written as ``\\xHH``, as ``shell.shown`` shows it."""
    from tinymnist.shell import shown

    bad = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
    return bad.sub(lambda m: f"\\x{ord(m.group()):02x}", shown(text))


def write_junit(path: str | os.PathLike, suite: str, cases: list[Case]) -> None:
    from tinymnist.results import atomic_write_bytes

    x = _xml_text
    root = ET.Element("testsuites")
    s = ET.SubElement(
        root,
        "testsuite",
        name=x(suite),
        tests=str(len(cases)),
        failures=str(sum(c.failure is not None for c in cases)),
        errors=str(sum(c.error is not None for c in cases)),
        skipped=str(sum(c.skipped is not None and c.failure is None and c.error is None for c in cases)),
        time=f"{sum(c.seconds for c in cases):.3f}",
    )
    for c in cases:
        tc = ET.SubElement(s, "testcase", classname=x(c.classname), name=x(c.name), time=f"{c.seconds:.3f}")
        if c.properties:
            props = ET.SubElement(tc, "properties")
            for k, v in c.properties.items():
                if isinstance(v, float) and not math.isfinite(v):
                    continue
                ET.SubElement(props, "property", name=x(k), value=f"{v:.6g}" if isinstance(v, float) else x(str(v)))
        if c.error is not None:
            ET.SubElement(tc, "error", message=x(c.error), type="RunNotCompleted").text = x(c.error)
        elif c.failure is not None:
            ET.SubElement(tc, "failure", message=x(c.failure), type="GateFailed").text = x(c.failure)
        elif c.skipped is not None:
            ET.SubElement(tc, "skipped", message=x(c.skipped))
    ET.indent(root)
    from tinymnist.results import text_bytes

    data = text_bytes(ET.tostring(root, encoding="unicode") + "\n")
    data = b'<?xml version="1.0" encoding="utf-8"?>\n' + data
    try:
        atomic_write_bytes(path, data, named=True)  # --junit-xml names this file
    except OSError as e:
        from tinymnist.errors import UsageError

        raise UsageError(f"--junit-xml {path}: cannot write ({e.strerror}); choose another path") from None


def write_markdown(path: str | os.PathLike, text: str) -> None:
    """Appends: $GITHUB_STEP_SUMMARY collects every step's markdown in one file, and a job may write twice."""
    from tinymnist.errors import UsageError
    from tinymnist.results import OutputError, dangling_link, refuse_hard_link, refuse_run_records, text_bytes

    data = text_bytes(text)
    refuse_run_records(path)
    try:
        refuse_hard_link(path)  # made since the command line was read
    except OutputError as e:
        raise UsageError(f"--markdown {path}: {e.strerror}") from None
    if dangling_link(path):
        raise UsageError(f"--markdown {path}: {dangling_link(path)}; give a file path, or a link to a file")
    if len(data) > MAX_SUMMARY_BYTES:
        data = data[: MAX_SUMMARY_BYTES - 200] + b"\n\n(cut at GitHub's 1 MiB job-summary limit)\n"
    try:
        with open(path, "ab") as f:
            f.write(data)
    except OSError as e:
        raise UsageError(f"--markdown {path}: cannot write ({e.strerror}); choose another path") from None


def train_cases(outcomes) -> list[Case]:
    """One case per (recipe, seed): its own gate; then one per recipe: the recipe-level rules."""
    from tinymnist.stats import last_k_mean
    from tinymnist.verdict import seed_verdict

    cases = []
    for recipe, runs, verdict in outcomes:
        # a seed judged as the recipe's verdict judged it (verdict.seed_verdict, which train's console line uses
        # too): under a population rule its accuracy below its own gate is a note (a property), not a failure
        population = verdict.rule in ("population", "share") and not verdict.smoke
        for r in runs:
            v = seed_verdict(r, population=population)
            props: dict[str, object] = {"params": r.params, "seconds": r.wall_seconds, "status": r.status}
            if r.epochs:
                props["final"] = r.test_acc[-1]
                props["last_k_mean"] = last_k_mean(r.test_acc, recipe.expect.last_k)
            not_result = r.status != "completed"
            if v.notes:
                props["below_own_gate"] = "; ".join(v.notes)
            message = "; ".join(v.reasons) or None
            cases.append(
                Case(
                    f"tinymnist.{recipe.key}",
                    f"seed {r.seed}",
                    r.wall_seconds,
                    failure=None if not_result else message,
                    error=message if not_result else None,
                    skipped=_not_judged(r) if v.smoke else None,
                    properties=props,
                )
            )
        seed_lines = {reason for r in runs for reason in seed_verdict(r).reasons}
        step_only = [x for x in verdict.reasons if x not in seed_lines]
        finals = [r.test_acc[-1] for r in runs if r.epochs]
        passed = "not judged" if verdict.smoke else verdict.runs - len(verdict.failed_seeds)  # no count to read green
        props = {"seeds": len(runs), "passed": passed, "rule": verdict.rule_text}
        if finals:
            props["mean_final"] = sum(finals) / len(finals)
        cases.append(
            Case(
                f"tinymnist.{recipe.key}",
                "recipe verdict (seeds present, mean final, one recipe)",
                sum(r.wall_seconds for r in runs),
                failure="; ".join(step_only) or None,
                skipped="not judged: smoke runs say nothing about accuracy" if verdict.smoke else None,
                properties=props,
            )
        )
    return cases


def _not_judged(r) -> str:
    epochs = f"{len(r.epochs)} epoch{'s' if len(r.epochs) != 1 else ''}"
    return (
        f"not judged: smoke run ({r.train_images:,} training images an epoch, {epochs}, {r.test_images:,} test images)"
    )


def train_markdown(outcomes, shard) -> str:
    from tinymnist.shell import table_row
    from tinymnist.summary import summarize

    where = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    lines = [
        f"## tinymnist train{where}",
        "",
        "| recipe | seeds | verdict | rule | pass rate | last-3 mean | final |",
        "|---|---|---|---|---|---|---|",
    ]
    if not outcomes:
        lines.append("| (none) | 0 | nothing to train in this shard | | | | |")
    for recipe, runs, verdict in outcomes:
        if not runs:
            continue
        s = summarize(runs)
        last = s.last_k.fmt() if s.last_k else "n/a"
        final = s.final_test.fmt() if s.final_test else "n/a"
        lines.append(
            table_row(recipe.label, len(runs), verdict.word, verdict.rule_text, verdict.rate_text, last, final)
        )
    return "\n".join(lines) + "\n\n"


def compare_cases(comparison) -> list[Case]:
    cases = []
    for r in comparison.rows:
        cases.append(
            Case(
                f"tinymnist.compare.{r.recipe}",
                r.figure,
                0.0,
                failure=r.message or None if r.regression else None,
                skipped=r.verdict if r.verdict.startswith("not judged") else None,  # a smoke run's gate
                properties={"baseline": r.old, "new": r.new, "rule": r.rule, "p": r.p, "effect": r.effect},
            )
        )
    return cases
