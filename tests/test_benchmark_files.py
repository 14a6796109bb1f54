"""pytest-benchmark JSON files as report and compare read them: every field checked, every refusal word for word.

In-process, so that mutation testing sees them (the CLI tests run these paths in a subprocess, where mutmut's
mutants are not loaded). Each case names the message it expects in full.
"""

import json
import math

import pytest

from tinymnist.compare import _bench_throughput
from tinymnist.results import ResultsError, load_benchmarks, machine_name


def bench_file(path, benchmarks, machine=None, **extra):
    doc = {"benchmarks": benchmarks, **extra}
    if machine is not None:
        doc["machine_info"] = machine
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def one(name="t", median=0.01, **fields):
    return {"name": name, "stats": {"median": median}, **fields}


def test_benchmarks_of_several_files_are_concatenated_and_the_last_machine_wins(tmp_path):
    a = bench_file(tmp_path / "a.json", [one("a1"), one("a2")], {"cpu": {"brand_raw": "A"}})
    b = bench_file(tmp_path / "b.json", [one("b1")], {"cpu": {"brand_raw": "B"}})
    benches, machine = load_benchmarks([a, b])
    assert [x["name"] for x in benches] == ["a1", "a2", "b1"]
    assert machine == {"cpu": {"brand_raw": "B"}}


def test_a_file_without_machine_info_keeps_the_machine_read_before(tmp_path):
    a = bench_file(tmp_path / "a.json", [one("a1")], {"cpu": {"brand_raw": "A"}})
    b = bench_file(tmp_path / "b.json", [one("b1")])
    assert load_benchmarks([a, b])[1] == {"cpu": {"brand_raw": "A"}}
    assert load_benchmarks([b])[1] == {}


def test_null_params_and_extra_info_are_pytest_benchmarks_own_and_accepted(tmp_path):
    a = bench_file(tmp_path / "a.json", [one(params=None, extra_info=None)])
    assert load_benchmarks([a])[0][0]["params"] is None


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"benchmarks": {"t": 1}}, "{p}: 'benchmarks' is not a list; regenerate the file with tox -e bench"),
        ({"benchmarks": [7]}, "{p}: benchmarks[0] has no name; regenerate the file with tox -e bench"),
        (
            {"benchmarks": [{"stats": {"median": 1}}]},
            "{p}: benchmarks[0] has no name; regenerate the file with tox -e bench",
        ),
        (
            {"benchmarks": [one("ok"), {"name": 3}]},
            "{p}: benchmarks[1] has no name; regenerate the file with tox -e bench",
        ),
        (
            {"benchmarks": [{"name": "t", "stats": [1]}]},
            "{p}: benchmarks[0] (t): stats is not an object; regenerate it with tox -e bench",
        ),
        (
            {"benchmarks": [one(params=[1])]},
            "{p}: benchmarks[0] (t): params is not an object; regenerate it with tox -e bench",
        ),
        (
            {"benchmarks": [one(extra_info="x")]},
            "{p}: benchmarks[0] (t): extra_info is not an object; regenerate it with tox -e bench",
        ),
        (
            {"benchmarks": [one(median=0)]},
            "{p}: benchmark t has no positive median time; regenerate the file with tox -e bench",
        ),
        (
            {"benchmarks": [one(median=-1.0)]},
            "{p}: benchmark t has no positive median time; regenerate the file with tox -e bench",
        ),
        (
            {"benchmarks": [one(median=1e400)]},  # json writes Infinity
            "{p}: benchmark t has no positive median time; regenerate the file with tox -e bench",
        ),
        (
            {"benchmarks": [one(median=True)]},
            "{p}: benchmark t has no positive median time; regenerate the file with tox -e bench",
        ),
        (
            {"benchmarks": [one(median="0.1")]},
            "{p}: benchmark t has no positive median time; regenerate the file with tox -e bench",
        ),
        (
            {"benchmarks": [{"name": "t"}]},
            "{p}: benchmark t has no positive median time; regenerate the file with tox -e bench",
        ),
        ({"runs": []}, "{p}: not a pytest-benchmark JSON file (no 'benchmarks')"),
        ([1, 2], "{p}: not a pytest-benchmark JSON file (no 'benchmarks')"),
        (
            {"benchmarks": [], "machine_info": [1]},
            "{p}: machine_info is not an object; regenerate the file with tox -e bench",
        ),
        (
            {"benchmarks": [], "machine_info": {"cpu": "x"}},
            "{p}: machine_info is not an object; regenerate the file with tox -e bench",
        ),
    ],
)
def test_a_damaged_benchmark_file_is_refused_by_name_and_field(tmp_path, doc, message):
    p = tmp_path / "bench.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ResultsError) as e:
        load_benchmarks([p])
    assert str(e.value) == message.format(p=p)


def test_a_file_that_is_not_json_is_named_as_a_benchmark_file(tmp_path):
    p = tmp_path / "bench.json"
    p.write_text("{")
    with pytest.raises(ResultsError, match=r"bench\.json: .*pytest-benchmark JSON file"):
        load_benchmarks([p])


def test_non_strict_loading_skips_other_json_but_reads_every_benchmark_file(tmp_path):
    """compare's folders hold results JSON beside the benchmark files: those are skipped, not fatal, and a
    skipped file in the middle does not stop the files after it."""
    a = bench_file(tmp_path / "a.json", [one("a1")], {"cpu": {"brand_raw": "A"}})
    (tmp_path / "b.json").write_text("{")
    (tmp_path / "c.json").write_text(json.dumps({"step": 4}))
    d = bench_file(tmp_path / "d.json", [one("d1")])
    benches, machine = load_benchmarks([a, tmp_path / "b.json", tmp_path / "c.json", d], strict=False)
    assert [x["name"] for x in benches] == ["a1", "d1"]
    assert machine == {"cpu": {"brand_raw": "A"}}
    with pytest.raises(ResultsError):
        load_benchmarks([a, tmp_path / "c.json"])  # strict is the default


def test_machine_name_prefers_the_cpu_brand_then_the_processor():
    assert machine_name({"cpu": {"brand_raw": "EPYC"}, "processor": "x86_64"}) == "EPYC"
    assert machine_name({"cpu": {}, "processor": "x86_64"}) == "x86_64"
    assert machine_name({"processor": "x86_64"}) == "x86_64"
    assert machine_name({}) == "?"


def test_compare_reads_each_benchmark_as_images_per_second_keyed_by_its_full_name(tmp_path):
    """``batch / median`` where the benchmark records its batch, ``1 / median`` where not; results files
    (``seed*.json``) and other JSON beside them are not benchmarks."""
    bench_file(
        tmp_path / "sub" / "bench.json",
        [
            one("t", 0.5, fullname="benchmarks/x.py::t", extra_info={"batch": 100}),
            one("u", 0.25),
            one("v", 0.5, extra_info=None),
        ],
        {"cpu": {"brand_raw": "EPYC"}},
    )
    (tmp_path / "seed0.json").write_text(json.dumps({"benchmarks": [one("seed", 1.0)]}))
    (tmp_path / "notes.json").write_text(json.dumps({"step": 4}))
    figures, machine = _bench_throughput(tmp_path)
    assert machine == "EPYC"
    assert figures.keys() == {"benchmarks/x.py::t", "u", "v"}
    assert math.isclose(figures["benchmarks/x.py::t"], 200.0)
    assert math.isclose(figures["u"], 4.0)
    assert math.isclose(figures["v"], 2.0)
