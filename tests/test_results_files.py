"""Results folders as every command reads them: what is loaded, in what order, and every refusal word for word.

In-process, so that mutation testing sees them (reports/mutation/: each case here kills a mutant that the
subprocess tests could not)."""

import json
from dataclasses import replace

import pytest

from tests.conftest import REPO
from tests.synth import RAMP, make_result, write_results
from tinymnist.recipes import RECIPES
from tinymnist.results import ResultsError, json_bytes, load_benchmarks, load_results, save_result


def named(key):
    return replace(RECIPES[4], key=key, name=key)


def test_results_are_grouped_by_recipe_built_in_steps_first_in_their_order(tmp_path):
    runs = [make_result(4, s, RAMP + [99.5] * 3) for s in (2, 0)]
    runs += [make_result(2, 1, RAMP + [99.5] * 3)]
    runs += [make_result(4, s, RAMP + [99.5] * 3, recipe=named("alpha")) for s in (1, 0)]
    write_results(tmp_path, runs)
    loaded = load_results(tmp_path)
    # not alphabetical ("alpha" < "step2"): the steps first, in order, then recipes by name
    assert list(loaded) == ["step2", "step4", "alpha"]
    assert [r.seed for r in loaded["step4"]] == [0, 2] and [r.seed for r in loaded["alpha"]] == [0, 1]


def test_files_that_are_not_seed_files_are_passed_over_not_read(tmp_path):
    write_results(tmp_path, [make_result(4, s, RAMP + [99.5] * 3) for s in (0, 1)])
    # sorts before seed0.json, matches the glob seed*.json, and is not a seed file: skipped, and the rest read
    (tmp_path / "step4" / "seed-old.json").write_text("not json")
    assert [r.seed for r in load_results(tmp_path)["step4"]] == [0, 1]


def test_a_results_file_in_another_recipes_folder_is_refused_by_name(tmp_path):
    path = save_result(tmp_path, make_result(4, 0, RAMP + [99.5] * 3))
    moved = tmp_path / "step3" / "seed0.json"
    moved.parent.mkdir()
    path.rename(moved)
    with pytest.raises(ResultsError) as e:
        load_results(tmp_path)
    assert str(e.value) == f"{moved}: holds results of recipe 'step4', not of 'step3'; move it"


def test_one_seed_cannot_be_counted_twice(tmp_path):
    """A copy of seed 0 under another seed file's name is refused: each file holds the seed of its name."""
    first = save_result(tmp_path, make_result(4, 0, RAMP + [99.5] * 3))
    second = tmp_path / "step4" / "seed00.json"
    second.write_bytes(first.read_bytes())
    with pytest.raises(ResultsError) as e:
        load_results(tmp_path)
    assert str(e.value) == f"{second}: holds seed 0, not the seed its name says; rename or remove it"


def test_results_files_are_written_two_space_indented_one_value_per_line():
    """Committed results are read in diffs: one value per line, two spaces, a final newline."""
    assert json_bytes({"a": [1, 2]}) == b'{\n  "a": [\n    1,\n    2\n  ]\n}\n'


def test_a_benchmark_file_that_is_not_json_is_named_as_one(tmp_path):
    bad = tmp_path / "bench.json"
    bad.write_text("{")
    with pytest.raises(ResultsError) as e:
        load_benchmarks([bad])
    assert str(e.value).startswith(f"{bad}: not a pytest-benchmark JSON file (not valid JSON: ")
    assert load_benchmarks([bad], strict=False) == ([], {})
    json.loads(json_bytes({}))  # and what we write is JSON


def test_a_run_records_the_commit_of_the_checkout_it_ran_in(tmp_path, monkeypatch):
    """In a throwaway repository: its commit, then -dirty once a tracked file changes; outside one, unknown."""
    import subprocess

    from tinymnist.results import git_sha

    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=repo,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q")
    (repo / "model.py").write_text("x = 1\n")
    git("add", "model.py")
    git("commit", "-qm", "one")
    monkeypatch.chdir(repo)
    git_sha.cache_clear()
    try:
        sha = git_sha()
        assert sha == git("rev-parse", "--short=12", "HEAD") and len(sha) == 12
        (repo / "model.py").write_text("x = 2\n")
        git_sha.cache_clear()
        assert git_sha() == f"{sha}-dirty"
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
        git_sha.cache_clear()
        assert git_sha() == "unknown"
    finally:
        git_sha.cache_clear()


# --- torch files: every way one can be bad, named (reports/mutation/: results.load_torch_data) ----------------


@pytest.fixture
def torch_files(tmp_path):
    import os

    import torch

    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    good = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    torch.save({"run": os.system}, tmp_path / "code.pt")
    (tmp_path / "opcode.pt").write_bytes(b"\x80\x02\xff")  # a pickle with an opcode that does not exist
    (tmp_path / "magic.pt").write_bytes(b"\x80\x02K\x01.")  # a legacy torch file whose magic number is 1
    (tmp_path / "cut-pickle.pt").write_bytes(b"\x80\x02\x8a\x0a")  # a pickle cut short: a bare EOFError
    return tmp_path


def test_a_torch_file_of_plain_data_loads_onto_the_device_asked_for(torch_files):
    from tinymnist.results import load_torch_data

    assert load_torch_data(torch_files / "ok.pt")["w"].device.type == "cpu"
    assert load_torch_data(torch_files / "ok.pt", device="meta")["w"].device.type == "meta"


@pytest.mark.parametrize(
    "name, says",
    [
        ("list.pt", "not a tinymnist file (holds a list)"),
        (
            "code.pt",
            "refused: it holds Python code (posix.system), not only tensors and numbers; nothing in it was run",
        ),
        ("opcode.pt", "not a torch checkpoint (unreadable pickle)"),
        ("magic.pt", "damaged (RuntimeError: Invalid magic number; corrupt file?)"),
        ("cut-pickle.pt", "damaged (EOFError)"),  # torch says nothing more; this once gave an IndexError
        (".", "cannot be read (Is a directory)"),
    ],
)
def test_a_bad_torch_file_is_named_with_what_is_wrong_and_the_fix(torch_files, name, says):
    from tinymnist.results import load_torch_data

    path = torch_files / name
    with pytest.raises(ResultsError) as e:
        load_torch_data(path)
    assert str(e.value) == f"{path}: {says}; delete it"
    with pytest.raises(ResultsError) as e:
        load_torch_data(path, fix="retrain it")
    assert str(e.value) == f"{path}: {says}; retrain it"


def test_a_damaged_torch_file_quotes_the_first_100_characters_of_what_torch_said(torch_files):
    import torch

    from tinymnist.results import load_torch_data

    with pytest.raises(RuntimeError) as raw:
        torch.load(torch_files / "cut.pt", weights_only=True)
    first = str(raw.value).splitlines()[0]
    assert len(first) > 100  # torch's message is long: it is cut, not wrapped
    with pytest.raises(ResultsError) as e:
        load_torch_data(torch_files / "cut.pt")
    assert str(e.value) == f"{torch_files / 'cut.pt'}: damaged (RuntimeError: {first[:100]}); delete it"


# --- the atomic writes, in-process (reports/mutation/: results._write_files, results._swap_in) ---------------


def test_a_file_is_staged_beside_its_target_under_a_hidden_temporary_name(tmp_path, monkeypatch):
    import os
    import re

    from tinymnist.results import atomic_write_bytes

    seen = []
    real_fsync = os.fsync

    def fsync(fd):  # the moment the data is on disk and not yet renamed
        seen.extend(sorted(p.name for p in (tmp_path / "out").iterdir()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_bytes(tmp_path / "out" / "seed0.json", b"{}")
    assert len(seen) == 1 and re.fullmatch(r"\.seed0\.json\.\w+\.tmp", seen[0]), seen
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["seed0.json"]


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_a_written_file_has_the_permissions_the_umask_allows(tmp_path, mask):
    import os

    from tinymnist.results import atomic_write_bytes

    old = os.umask(mask)
    try:
        atomic_write_bytes(tmp_path / "seed0.json", b"{}")
        assert os.umask(mask) == mask  # and the umask is left as it was
    finally:
        os.umask(old)
    assert (tmp_path / "seed0.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_pair_that_cannot_be_placed_whole_puts_the_old_pair_back(tmp_path, monkeypatch):
    import os

    from tinymnist.results import atomic_write_pair

    result, weights = tmp_path / "seed0.json", tmp_path / "seed0.pt"
    atomic_write_pair([(result, b"old result"), (weights, b"old weights")])
    real_replace, calls = os.replace, []

    def replace_(src, dst):
        calls.append((str(src), str(dst)))
        # both old files set aside, the new result placed: then the weights cannot be
        if len(calls) == 4:
            raise PermissionError(1, "Operation not permitted", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_)
    with pytest.raises(OSError, match="seed0.pt: cannot write here .Operation not permitted."):
        atomic_write_pair([(result, b"new result"), (weights, b"new weights")])  # an OutputError: exit 2
    monkeypatch.setattr(os, "replace", real_replace)
    assert result.read_bytes() == b"old result" and weights.read_bytes() == b"old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0.json", "seed0.pt"]  # no temporaries, no backups
    # and a pair that can be placed replaces both, leaving nothing else behind
    atomic_write_pair([(result, b"new result"), (weights, b"new weights")])
    assert result.read_bytes() == b"new result" and weights.read_bytes() == b"new weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0.json", "seed0.pt"]


@pytest.mark.parametrize("doc, got", [([1], "'list'"), ({"schema_version": 99}, "99"), ({}, "None"), ("seed", "'str'")])
def test_a_results_document_of_no_schema_this_harness_reads_says_what_it_is(doc, got):
    from tinymnist.results import RunResult

    with pytest.raises(ValueError) as e:
        RunResult.from_dict(doc)
    assert str(e.value) == f"results schema {got}, this harness reads 1, 2, 3"


def _drop(*names):
    return lambda d: [d.pop(n) for n in names]


def _epoch(i, **change):
    return lambda d: d["epochs"][i].update(change)


def _epoch_drop(i, *names):
    return lambda d: [d["epochs"][i].pop(n) for n in names]


@pytest.mark.parametrize(
    "damage, message",
    [
        (_drop("seed"), "field seed is missing"),
        (_drop("seed", "step"), "field step is missing"),  # the first in the file's own order
        (lambda d: d.update(zz=1, aa=2), "field aa is not a results field"),  # the first by name
        (lambda d: d.update(seed="x"), "seed is 'x', not a int"),
        (lambda d: d["epochs"].__setitem__(1, [1]), "epochs[2] is list, not an object"),
        (_epoch_drop(1, "test_loss", "test_acc"), "epochs[2] field test_acc is missing or unknown"),
        (_epoch(1, extra=1), "epochs[2] field extra is missing or unknown"),
        (_epoch(1, test_acc="x"), "epochs[2].test_acc is 'x', not a float"),
        (_epoch(1, train_acc=101.0), "epochs[2].train_acc is 101.0, outside [0, 100]"),
        (_epoch(1, test_acc=-1.0), "epochs[2].test_acc is -1.0, outside [0, 100]"),
        (_epoch(1, val_acc=100.5), "epochs[2].val_acc is 100.5, outside [0, 100]"),
    ],
)
def test_a_damaged_results_document_names_the_field_word_for_word(damage, message):
    import copy

    from tinymnist.results import RunResult

    d = copy.deepcopy(make_result(4, 0, RAMP + [99.5] * 3).to_dict())
    damage(d)
    with pytest.raises(ValueError) as e:
        RunResult.from_dict(d)
    assert str(e.value) == message


def test_only_a_regular_file_of_bounded_size_is_read_and_every_refusal_names_it(tmp_path):
    import os

    from tinymnist.results import load_result, read_regular_file

    fifo = tmp_path / "seed0.json"
    os.mkfifo(fifo)  # reading it would hang: refused before it is opened
    with pytest.raises(ResultsError) as e:
        load_result(fifo)
    assert str(e.value) == (f"{fifo}: not a regular file (a FIFO, a device or a socket); pass a tinymnist results file")
    with pytest.raises(ResultsError) as e:
        load_result(tmp_path)
    assert str(e.value) == f"{tmp_path}: a folder; pass a tinymnist results file"
    with pytest.raises(ResultsError) as e:
        load_result(tmp_path / "absent.json")
    assert str(e.value) == f"{tmp_path / 'absent.json'}: cannot be read (No such file or directory)"
    exact = tmp_path / "exact.bin"
    exact.write_bytes(b"x" * 10)
    assert read_regular_file(exact, "file", max_bytes=10) == b"x" * 10  # at the limit: read, all of it
    with pytest.raises(ResultsError) as e:
        read_regular_file(exact, "file", max_bytes=9)
    assert str(e.value) == f"{exact}: 10 bytes, too large for a file (at most 9)"
    bad = tmp_path / "bad.json"
    bad.write_text("{" + '"k": 1, ' * 40 + "oops")
    with pytest.raises(ResultsError) as e:
        load_result(bad)
    detail = str(e.value).removeprefix(f"{bad}: not a tinymnist results file (not valid JSON: ").removesuffix(")")
    assert detail == str(_json_error(bad.read_text()))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000)
    with pytest.raises(ResultsError) as e:
        load_result(deep)
    assert str(e.value) == f"{deep}: not a tinymnist results file (nested too deeply)"


def _json_error(text):
    try:
        json.loads(text)
    except ValueError as e:
        return e
    raise AssertionError("valid JSON")


def test_accuracies_at_and_near_zero_are_accuracies():
    """0% is a bad epoch, not a bad file: the range is [0, 100], closed at both ends."""
    from tinymnist.results import RunResult

    for value in (0.0, 0.5, 100.0):
        d = make_result(4, 0, RAMP + [99.5] * 3).to_dict()
        d["epochs"][0]["train_acc"] = value
        assert RunResult.from_dict(d).epochs[0].train_acc == value


def test_values_that_parse_but_do_not_fit_are_exit_2_naming_the_file_and_field(tmp_path, capsys):
    """Issue 30, cause 14: an integer too large for a float as an accuracy was an OverflowError (exit 3), and
    one epoch without the validation figures the others have read as "trained without --val-split"."""
    import shutil

    from tests.conftest import REPO
    from tinymnist.cli import main

    folder = tmp_path / "r"
    shutil.copytree(REPO / "reports" / "frontier" / "step6" / "step6", folder / "step6")
    path = folder / "step6" / "seed1.json"
    good = path.read_text()
    d = json.loads(good)
    d["epochs"][0]["test_acc"] = 10**400
    path.write_text(json.dumps(d))
    assert main(["report", str(folder), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: not a tinymnist results file (epochs[1].test_acc is 1000" in err and "not a float" in err
    d = json.loads(good)
    del d["epochs"][13]["val_acc"]
    path.write_text(json.dumps(d))
    assert main(["compare", str(folder), str(folder), "--on", "val"]) == 2
    assert "(epochs[14] has no val_acc, which the other epochs have)" in capsys.readouterr().err
    for field, where, value, said in (
        ("status", None, "done", "field status is 'done', not one of completed, diverged, interrupted"),
        ("threads", None, -1, "field threads is -1, not a number in [1, 1e+06]"),
        ("images_per_second", 3, -5.0, "epochs[4].images_per_second is -5.0, not a number in [0, 1e+09]"),
        # the fourth independent sweep: values no run can have, filed or judged as if one had
        ("images_per_second", 3, 1e308, "epochs[4].images_per_second is 1e+308, not a number in [0, 1e+09]"),
        ("train_images", None, 10**9, "field train_images is 1000000000, not a number in [1, 60000]"),
        ("test_images", None, 20000, "field test_images is 20000, not a number in [1, 10000]"),
        ("seed", None, 2**40, "field seed is 1099511627776, not a number in [0, 4.29497e+09]"),
        ("val_images", None, 50000, "fields train_images + val_images are 100,000, more than MNIST's 60,000"),
        ("planned_epochs", None, 16, "field planned_epochs is 16, but its recipe trains 15"),
        ("step", None, 4, "field step is 4, but its recipe's is 6"),
        ("lr", 2, -1.0, "epochs[3].lr is -1.0, not a number in [0, 1e+06]"),
        ("train_loss", 2, -5.0, "epochs[3].train_loss is -5.0: a loss is never negative"),
        ("diverged_at", None, {"epoch": 1}, "field diverged_at is set in a run whose status is 'completed'"),
        # the fifth independent sweep: a diverged run that does not say where, a recorded recipe with no seeds,
        # an identity (what a resume is checked against) naming another recipe or device than the run's
        ("status", None, "diverged", "field diverged_at is None in a diverged run"),
        ("seeds", "recipe+identity.recipe", [], "seeds () must be a non-empty list of distinct seeds"),
        ("lr", "identity.recipe", 0.123, "field identity.recipe differs from the run's recipe"),
        ("device", "identity", "cuda", "field identity.device is 'cuda', but the run's device is 'cpu'"),
        # the sixth: a recorded seed write-up with a field missing, or of another type, crashed report (exit 3)
        ("seed_reference", "recipe+identity.recipe", {"params": 1}, "must be {} or hold exactly params, best_train"),
        (
            "seed_reference",
            "recipe+identity.recipe",
            {"params": 1, "best_train": "a", "best_test": 1},
            "recipe field seed_reference.best_train is 'a', not a float",
        ),
        # the eighth: an epoch that took no time (a throughput "regression" in compare), a device no run has,
        # an identity disagreeing with the run's image counts, a population or a stack no run records
        ("images_per_second", 3, 0.0, "epochs[4].images_per_second is 0.0: an epoch that trained takes time"),
        ("seconds", 3, 0.0, "epochs[4].seconds is 0.0: an epoch that trained takes time"),
        ("device", None, "tpu", "field device is 'tpu'; a run records one of cpu, cuda"),
        ("train_images", "identity", 60000, "field identity.train_images is 60000, but the run's train_images is"),
        ("population", "identity", 0, "field identity.population is 0, not an integer >= 1 (or null)"),
        ("stacked", "identity", 0, "field identity.stacked is 0, not an integer >= 1"),
    ):
        d = json.loads(good)
        if isinstance(where, str):  # fields of nested objects: "identity.recipe", "recipe+identity.recipe"
            for place in where.split("+"):
                obj = d
                for part in place.split("."):
                    obj = obj[part]
                obj[field] = value
        else:
            (d if where is None else d["epochs"][where])[field] = value
        path.write_text(json.dumps(d))
        assert main(["report", str(folder), "--out", str(tmp_path / "o")]) == 2
        assert said in capsys.readouterr().err
    d = json.loads(good)  # a split no command holds out (at most 50,000), beside a training subset that fits
    d.update(train_images=3000, val_images=55000)
    d["identity"].update(train_images=3000, val_images=55000)
    path.write_text(json.dumps(d))
    assert main(["report", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "field val_images is 55000, not a number in [0, 50000]" in capsys.readouterr().err
    d = json.loads(good)
    for recipe in (d["recipe"], d["identity"]["recipe"]):  # the recorded gate checks nothing: a damaged file
        recipe["expect"]["last_k"] = 0
    path.write_text(json.dumps(d))
    assert main(["compare", str(folder), str(folder)]) == 2
    assert "expect.last_k=0 is outside its range" in capsys.readouterr().err


def test_a_benchmark_file_whose_table_fields_do_not_fit_is_named(tmp_path, capsys):
    """The fourth independent sweep: extra_info.batch "x" crashed report (exit 3), and an engine named
    "to|rch\\n# x" broke REPORT.md's table with a heading of its own."""
    from tinymnist.cli import main

    good = json.loads((REPO / "reports" / "baseline" / "bench.json").read_text())
    i = next(i for i, b in enumerate(good["benchmarks"]) if (b.get("extra_info") or {}).get("kind") == "inference")
    for name, value, said in (
        ("batch", "x", "extra_info.batch is 'x', not an integer in [1, 10**9]"),
        ("batch", 10**400, "not an integer in [1, 10**9]"),  # overflowed in the report (the fifth sweep)
        ("engine", "to|rch\n# x", "extra_info.engine is 'to|rch\\n# x', not a short printable"),
    ):
        d = json.loads(json.dumps(good))
        d["benchmarks"][i]["extra_info"][name] = value
        bench = tmp_path / "bench.json"
        bench.write_text(json.dumps(d))
        argv = ["report", str(REPO / "reports" / "baseline"), "--out", str(tmp_path / "r"), "--bench", str(bench)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err, err
