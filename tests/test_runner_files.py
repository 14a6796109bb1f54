"""The runner's files, resume and messages, in process and in milliseconds: ``engine.train`` (and
``train_population``) are replaced by a fake that calls ``on_epoch`` and finishes, stops or diverges on cue, so
each test is about what the runner writes, keeps and says, word for word. Training itself is tested in
test_engine and test_reliability; these tests exist so that a mutation of the runner costs seconds to judge
(issue 18: the runner's mutants were left unrun because its tests train models)."""

import dataclasses
import errno
import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import tinymnist.population
from tinymnist import engine, results, runner
from tinymnist.data import MNISTTensors
from tinymnist.errors import Terminated
from tinymnist.recipes import get_recipe, with_overrides
from tinymnist.results import EpochStats, ResultsError, load_result, load_torch_data, result_path
from tinymnist.runner import RunInterrupted, RunnerError, RunPlan, TrainOptions, identity_mismatch, run_seed

RECIPE = with_overrides(get_recipe(4), ["epochs=3"])
CPU = torch.device("cpu")


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return MNISTTensors(
        torch.randn(40, 1, 28, 28, generator=g),
        torch.arange(40) % 10,
        torch.zeros(20, 1, 28, 28),
        torch.arange(20) % 10,
    )


def _epoch(e: int) -> EpochStats:
    return EpochStats(e, 0.1, 99.0, 0.05, 99.0 + e / 10, 0.01, 1.0, 0.1, 1000.0)


def _trained(recipe, seed, status, history, weights=None) -> engine.Trained:
    return engine.Trained(recipe, seed, status, list(history), 8952, 1.5, 40, 20, 0, None, weights)


class FakeEngine:
    """``engine.train``'s contract without the arithmetic: one snapshot per epoch after ``start``'s, then a
    completed, diverged or interrupted ``Trained``. ``calls`` records each call's starting epoch."""

    def __init__(self, stop_after: int | None = None, cause: BaseException | None = None, status="completed"):
        self.stop_after, self.cause, self.status = stop_after, cause or KeyboardInterrupt(), status
        self.calls: list[int] = []
        self.seen: list[dict] = []  # each call's arguments besides the recipe, seeds and callbacks
        self.diverged_at = {"epoch": 2, "batch": 7, "loss": "nan"}

    def run_one(self, recipe, seed, start, on_epoch):
        first = start["epoch"] if start else 0
        self.calls.append(first)
        history = [EpochStats(**h) for h in start["history"]] if start else []
        for e in range(first + 1, recipe.epochs + 1):
            if self.stop_after is not None and e > self.stop_after:
                return None, history
            history.append(_epoch(e))
            on_epoch(
                {
                    "epoch": e,
                    "model": {"w": torch.full((2,), float(seed + e))},
                    "optimizer": {},
                    "optimizer_step": e,
                    "history": [dataclasses.asdict(h) for h in history],
                    "wall_seconds": float(e),
                }
            )
        return {"w": torch.full((2,), float(seed))}, history

    def train(self, recipe, seed, data, device, *, start=None, on_epoch=None, **kw):
        self.seen.append({"data": data, "device": device, **kw})
        weights, history = self.run_one(recipe, seed, start, on_epoch)
        if weights is None:
            raise engine.Interrupted(_trained(recipe, seed, "interrupted", history), self.cause)
        if self.status == "diverged":
            return dataclasses.replace(_trained(recipe, seed, "diverged", history), diverged_at=self.diverged_at)
        return _trained(recipe, seed, "completed", history, weights)

    def train_population(self, recipe, seeds, data, device, *, starts=None, on_epoch=None, **kw):
        self.seen.append({"data": data, "device": device, **kw})
        done = []
        for i, seed in enumerate(seeds):
            start = starts[i] if starts else None
            weights, history = self.run_one(recipe, seed, start, lambda snap, i=i: on_epoch(i, snap))
            done.append((seed, weights, history))
        if any(w is None for _, w, _ in done):
            raise engine.Interrupted([_trained(recipe, s, "interrupted", h) for s, _, h in done], self.cause)
        return [_trained(recipe, s, "completed", h, w) for s, w, h in done]


@pytest.fixture
def fake(monkeypatch):
    f = FakeEngine()
    monkeypatch.setattr(engine, "train", f.train)
    monkeypatch.setattr(tinymnist.population, "train_population", f.train_population)
    return f


def _plan(seed=0, recipe=RECIPE, population=1, requested=None) -> RunPlan:
    return RunPlan(recipe, seed, CPU, None, None, population, requested)


def _paths(out, seed=0):
    return tuple(result_path(out, RECIPE.key, seed, s) for s in (".json", ".pt", ".ckpt"))


def _full(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


# --- identity_mismatch: the first field that differs, in words ---------------------------------------------


def test_equal_identities_agree():
    ident = _plan().identity(
        MNISTTensors(torch.zeros(3, 1, 28, 28), torch.zeros(3), torch.zeros(2, 1, 28, 28), torch.zeros(2))
    )
    assert identity_mismatch(ident, dict(ident)) is None


def test_the_first_differing_field_is_named_with_both_values():
    assert identity_mismatch({"seed": 1, "train_images": 60000}, {"seed": 2, "train_images": 50000}) == "seed 1 -> 2"
    assert identity_mismatch({"seed": 1, "train_images": 60000}, {"seed": 1, "train_images": 50000}) == (
        "train_images 60000 -> 50000"
    )


def test_a_field_the_old_run_did_not_record_is_not_a_difference_and_the_next_one_is_still_checked():
    assert identity_mismatch({"seed": 1}, {"stacked": 2, "seed": 1}) is None
    assert identity_mismatch({"seed": 1}, {"stacked": 2, "seed": 3}) == "seed 1 -> 3"


@pytest.mark.parametrize("old, new", [(None, 4), (4, None), (None, None)])
def test_a_population_the_harness_chose_is_not_the_users_setting(old, new):
    assert identity_mismatch({"population": old, "seed": 1}, {"population": new, "seed": 1}) is None
    # ... and the fields after it are still compared
    assert identity_mismatch({"population": old, "seed": 1}, {"population": new, "seed": 5}) == "seed 1 -> 5"


def test_two_populations_the_user_set_differently_are_named():
    assert identity_mismatch({"population": 2}, {"population": 4}) == "population 2 -> 4"


def test_a_recipe_difference_is_named_field_by_field():
    other = with_overrides(RECIPE, ["lr=0.05", "batch_size=64"])
    assert identity_mismatch({"recipe": RECIPE.to_dict()}, {"recipe": other.to_dict()}) == (
        f"recipe batch_size {RECIPE.batch_size} -> 64; lr {json.dumps(RECIPE.lr)} -> 0.05"
    )


def test_an_unreadable_recorded_recipe_is_a_difference_said_as_such():
    assert identity_mismatch({"recipe": {"step": "four"}}, {"recipe": RECIPE.to_dict()}) == "recipe the recipe"


def test_one_recipe_recorded_by_an_older_version_is_the_same_recipe():
    old = RECIPE.to_dict()
    del old["nesterov"]  # a field added since, at its default
    assert identity_mismatch({"recipe": old, "seed": 0}, {"recipe": RECIPE.to_dict(), "seed": 0}) is None
    assert identity_mismatch({"recipe": old, "seed": 0}, {"recipe": RECIPE.to_dict(), "seed": 9}) == "seed 0 -> 9"


# --- one seed: the files a run leaves, and what each failure keeps ----------------------------------------


def test_a_completed_run_writes_the_result_and_its_weights_and_drops_its_checkpoint(fake, data, tmp_path):
    done, weights, ckpt = _paths(tmp_path, 3)
    r = run_seed(_plan(3), data, tmp_path)
    assert fake.calls == [0] and r.status == "completed" and [e.epoch for e in r.epochs] == [1, 2, 3]
    assert load_result(done).to_dict() == r.to_dict()
    saved = load_torch_data(weights)
    assert (
        saved["recipe"] == RECIPE.to_dict()
        and saved["seed"] == 3
        and torch.equal(saved["model"]["w"], torch.full((2,), 3.0))
    )
    assert not ckpt.exists()
    assert r.identity == _plan(3).identity(data) and r.population == 1 and r.device == "cpu"
    assert r.gate == runner.seed_verdict(r).to_dict() and r.threads == torch.get_num_threads()


def test_each_epoch_is_checkpointed_with_the_runs_identity(fake, data, tmp_path, monkeypatch):
    done, _, ckpt = _paths(tmp_path)
    seen = []

    def keep(path, state):
        seen.append((Path(path), state))

    monkeypatch.setattr(runner, "atomic_torch_save", keep)
    run_seed(_plan(), data, tmp_path)
    assert [p for p, _ in seen] == [ckpt] * 3
    assert [s["epoch"] for _, s in seen] == [1, 2, 3]
    assert all(s["identity"] == _plan().identity(data) for _, s in seen)


def test_a_full_disk_at_the_first_checkpoint_keeps_nothing_of_the_run(fake, data, tmp_path, monkeypatch):
    _, _, ckpt = _paths(tmp_path)
    monkeypatch.setattr(runner, "atomic_torch_save", _full)
    with pytest.raises(RunnerError) as e:
        run_seed(_plan(), data, tmp_path)
    assert str(e.value) == f"{ckpt}: cannot write the checkpoint (No space left on device); kept: nothing of this run"


def test_a_full_disk_at_a_later_checkpoint_keeps_the_one_before(fake, data, tmp_path, monkeypatch):
    _, _, ckpt = _paths(tmp_path)
    real, calls = results.atomic_torch_save, []

    def second_fails(path, state):
        calls.append(1)
        (_full if len(calls) == 2 else real)(path, state)

    monkeypatch.setattr(runner, "atomic_torch_save", second_fails)
    with pytest.raises(RunnerError) as e:
        run_seed(_plan(), data, tmp_path)
    assert str(e.value) == (
        f"{ckpt}: cannot write the checkpoint (No space left on device); kept: the checkpoint of epoch 1"
    )
    assert load_torch_data(ckpt)["epoch"] == 1


def test_a_full_disk_during_a_rerun_also_names_the_completed_result_it_kept(fake, data, tmp_path, monkeypatch):
    done, _, ckpt = _paths(tmp_path)
    run_seed(_plan(), data, tmp_path)
    monkeypatch.setattr(runner, "atomic_torch_save", _full)
    with pytest.raises(RunnerError) as e:
        run_seed(_plan(), data, tmp_path)
    assert str(e.value) == (
        f"{ckpt}: cannot write the checkpoint (No space left on device); kept: nothing of this run, "
        f"and the completed result {done}"
    )


def test_a_full_disk_at_the_end_keeps_the_checkpoint_and_says_how_to_finish(fake, data, tmp_path, monkeypatch):
    done, weights, ckpt = _paths(tmp_path)
    monkeypatch.setattr(results, "atomic_write_pair", _full)
    with pytest.raises(RunnerError) as e:
        run_seed(_plan(), data, tmp_path)
    assert str(e.value) == (
        f"{done}: cannot write the result and final weights (No space left on device); kept: the checkpoint "
        f"{ckpt}; fix that and rerun with --resume to write the results"
    )
    assert load_torch_data(ckpt)["epoch"] == 3 and not done.exists() and not weights.exists()


def test_a_diverged_run_leaves_a_result_without_weights(data, tmp_path, monkeypatch):
    done, weights, _ = _paths(tmp_path)
    f = FakeEngine()
    monkeypatch.setattr(engine, "train", f.train)
    run_seed(_plan(), data, tmp_path)
    assert weights.exists()
    f.status = "diverged"
    r = run_seed(_plan(), data, tmp_path)
    assert r.status == "diverged" and load_result(done).status == "diverged"
    assert r.diverged_at == f.diverged_at == load_result(done).diverged_at
    assert not weights.exists()  # the old weights do not belong to this result


def test_a_full_disk_when_writing_a_diverged_result_keeps_nothing(data, tmp_path, monkeypatch):
    done, _, _ = _paths(tmp_path)
    monkeypatch.setattr(engine, "train", FakeEngine(status="diverged").train)
    monkeypatch.setattr(runner, "save_result", _full)
    with pytest.raises(RunnerError) as e:
        run_seed(_plan(), data, tmp_path)
    assert str(e.value) == f"{done}: cannot write the result (No space left on device); kept: nothing of this run"


@pytest.mark.parametrize("cause, name", [(Terminated(), "SIGTERM"), (KeyboardInterrupt(), "SIGINT")])
def test_an_interrupt_writes_a_partial_result_and_names_its_signal(data, tmp_path, monkeypatch, cause, name):
    done, weights, ckpt = _paths(tmp_path)
    monkeypatch.setattr(engine, "train", FakeEngine(stop_after=2, cause=cause).train)
    with pytest.raises(RunInterrupted) as e:
        run_seed(_plan(), data, tmp_path)
    assert e.value.signal_name == name and e.value.path == tmp_path / RECIPE.key
    assert e.value.kept_completed is False
    [r] = e.value.results
    assert r.status == "interrupted" and [x.epoch for x in r.epochs] == [1, 2]
    assert load_result(done).to_dict() == r.to_dict()
    assert load_torch_data(ckpt)["epoch"] == 2 and not weights.exists()


def test_an_interrupted_rerun_keeps_the_completed_pair_and_says_so(data, tmp_path, monkeypatch):
    done, weights, _ = _paths(tmp_path)
    f = FakeEngine()
    monkeypatch.setattr(engine, "train", f.train)
    run_seed(_plan(), data, tmp_path)
    before = (done.read_bytes(), weights.read_bytes())
    f.stop_after = 1
    with pytest.raises(RunInterrupted) as e:
        run_seed(_plan(), data, tmp_path)
    assert e.value.kept_completed is True and e.value.results[0].status == "interrupted"
    assert (done.read_bytes(), weights.read_bytes()) == before


def test_a_full_disk_when_writing_a_partial_result_keeps_the_checkpoint(data, tmp_path, monkeypatch):
    done, _, ckpt = _paths(tmp_path)
    monkeypatch.setattr(engine, "train", FakeEngine(stop_after=1).train)
    monkeypatch.setattr(runner, "save_result", _full)
    with pytest.raises(RunnerError) as e:
        run_seed(_plan(), data, tmp_path)
    assert (
        str(e.value)
        == f"{done}: cannot write the partial result (No space left on device); kept: the checkpoint {ckpt}"
    )


# --- resume --------------------------------------------------------------------------------------------------


def test_resume_continues_from_the_checkpoint(data, tmp_path, monkeypatch):
    f = FakeEngine(stop_after=2)
    monkeypatch.setattr(engine, "train", f.train)
    with pytest.raises(RunInterrupted):
        run_seed(_plan(), data, tmp_path)
    f.stop_after = None
    r = run_seed(_plan(), data, tmp_path, resume=True)
    assert f.calls == [0, 2] and [e.epoch for e in r.epochs] == [1, 2, 3]


def test_without_resume_a_checkpoint_is_ignored(data, tmp_path, monkeypatch):
    f = FakeEngine(stop_after=2)
    monkeypatch.setattr(engine, "train", f.train)
    with pytest.raises(RunInterrupted):
        run_seed(_plan(), data, tmp_path)
    f.stop_after = None
    run_seed(_plan(), data, tmp_path)
    assert f.calls == [0, 0]


def test_resume_of_another_run_names_the_field_and_the_fix(data, tmp_path, monkeypatch):
    _, _, ckpt = _paths(tmp_path)
    monkeypatch.setattr(engine, "train", FakeEngine(stop_after=1).train)
    with pytest.raises(RunInterrupted):
        run_seed(_plan(), data, tmp_path)
    with pytest.raises(RunnerError) as e:
        run_seed(RunPlan(RECIPE, 0, CPU, max_batches=5), data, tmp_path, resume=True)
    assert str(e.value) == (
        f"{ckpt}: --resume of another run (max_batches None -> 5); resume with the settings it was started "
        "with (its command is printed when it stops), or rerun without --resume"
    )


def test_resume_of_a_run_with_another_seed_count_is_refused_by_name(data, tmp_path, monkeypatch):
    _, _, ckpt = _paths(tmp_path)
    monkeypatch.setattr(engine, "train", FakeEngine(stop_after=1).train)
    with pytest.raises(RunInterrupted):
        run_seed(_plan(requested=2), data, tmp_path)
    with pytest.raises(RunnerError) as e:
        run_seed(_plan(requested=3), data, tmp_path, resume=True)
    assert str(e.value) == (
        f"{ckpt}: --resume of another run (population 2 -> 3); resume with the settings it was started with "
        "(its command is printed when it stops), or rerun without --resume"
    )


def test_resume_over_a_completed_result_returns_it_untrained(fake, data, tmp_path):
    first = run_seed(_plan(), data, tmp_path)
    again = run_seed(_plan(), data, tmp_path, resume=True)
    assert fake.calls == [0] and again.to_dict() == first.to_dict()


def test_resume_over_a_completed_result_with_other_settings_changes_nothing(fake, data, tmp_path):
    done, weights, _ = _paths(tmp_path)
    run_seed(_plan(requested=2), data, tmp_path)
    before = (done.read_bytes(), weights.read_bytes())
    with pytest.raises(RunnerError) as e:
        run_seed(_plan(requested=4), data, tmp_path, resume=True)
    assert str(e.value) == (
        f"{done}: --resume over a completed result with other settings (population 2 -> 4); nothing was "
        "changed. Rerun without --resume to replace it, or use another --out"
    )
    assert (done.read_bytes(), weights.read_bytes()) == before and fake.calls == [0]


def test_a_completed_result_without_its_weights_is_not_a_pair_an_interrupted_rerun_keeps(data, tmp_path, monkeypatch):
    done, weights, _ = _paths(tmp_path)
    f = FakeEngine()
    monkeypatch.setattr(engine, "train", f.train)
    run_seed(_plan(), data, tmp_path)
    weights.unlink()
    f.stop_after = 1
    with pytest.raises(RunInterrupted) as e:
        run_seed(_plan(), data, tmp_path)
    assert e.value.kept_completed is False and load_result(done).status == "interrupted"


def test_a_damaged_result_is_refused_by_resume_and_replaced_by_a_plain_rerun(fake, data, tmp_path):
    done, _, _ = _paths(tmp_path)
    done.parent.mkdir(parents=True)
    done.write_text("{not json")
    with pytest.raises(ResultsError):
        run_seed(_plan(), data, tmp_path, resume=True)
    assert fake.calls == []
    run_seed(_plan(), data, tmp_path)
    assert load_result(done).status == "completed"


def test_a_schema_1_result_is_compared_on_what_it_recorded(fake, data, tmp_path):
    done, _, _ = _paths(tmp_path)
    run_seed(_plan(), data, tmp_path)
    d = json.loads(done.read_text())
    del d["identity"]
    done.write_text(json.dumps(d))
    assert run_seed(_plan(), data, tmp_path, resume=True).seed == 0 and fake.calls == [0]
    d["test_images"] = 10
    done.write_text(json.dumps(d))
    with pytest.raises(RunnerError, match=r"\(test_images 10 -> 20\)"):
        run_seed(_plan(), data, tmp_path, resume=True)


def test_a_writers_leftover_temporaries_of_this_seed_are_removed_and_no_others(fake, data, tmp_path):
    folder = tmp_path / RECIPE.key
    folder.mkdir()
    mine, other = folder / ".seed0.json.abc.tmp", folder / ".seed1.json.abc.tmp"
    mine.write_text("x")
    other.write_text("x")
    run_seed(_plan(), data, tmp_path)
    assert not mine.exists() and other.exists()


# --- the lock ------------------------------------------------------------------------------------------------


def test_a_busy_seed_names_its_holder(tmp_path):
    lock = result_path(tmp_path, RECIPE.key, 0, ".lock")
    with runner.seed_lock(tmp_path, RECIPE.key, 0):
        assert lock.read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"
        with pytest.raises(RunnerError) as e, runner.seed_lock(tmp_path, RECIPE.key, 0):
            pass
    assert str(e.value) == (
        f"{lock}: step 4 seed 0 is being written by pid {os.getpid()} on {socket.gethostname()}; wait for it to "
        "finish or choose another --out"
    )
    with runner.seed_lock(tmp_path, RECIPE.key, 0):  # released: taken again
        pass


def test_a_folder_that_cannot_hold_the_lock_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunnerError) as e, runner.seed_lock(blocker, RECIPE.key, 0):
        pass
    assert str(e.value) == f"{blocker / RECIPE.key}: cannot write here (Not a directory); choose another --out"


# --- populations ---------------------------------------------------------------------------------------------


def test_a_population_writes_each_seeds_files_and_returns_them_in_order(fake, data, tmp_path):
    plans = [_plan(s, population=2) for s in (5, 4)]
    rs = runner.run_population(plans, data, tmp_path)
    assert [r.seed for r in rs] == [5, 4] and fake.calls == [0, 0]
    for r in rs:
        assert r.identity == plans[0].identity(data, 2) | {"seed": r.seed} and r.population == 2
        done, weights, ckpt = _paths(tmp_path, r.seed)
        assert load_result(done).seed == r.seed and load_torch_data(weights)["seed"] == r.seed and not ckpt.exists()


def test_a_population_resumes_members_from_different_epochs_apart(data, tmp_path, monkeypatch):
    f = FakeEngine(stop_after=1)
    monkeypatch.setattr(tinymnist.population, "train_population", f.train_population)
    plans = [_plan(s, population=3) for s in (0, 1, 2)]
    with pytest.raises(RunInterrupted):
        runner.run_population(plans, data, tmp_path)  # every member stops after epoch 1
    _paths(tmp_path, 2)[2].unlink()  # seed 2 has no checkpoint: it starts again
    f.stop_after = None
    f.calls.clear()
    rs = runner.run_population(plans, data, tmp_path, resume=True)
    assert [r.seed for r in rs] == [0, 1, 2] and f.calls == [1, 1, 0]
    assert all(r.status == "completed" and [e.epoch for e in r.epochs] == [1, 2, 3] for r in rs)


def test_an_interrupted_population_reports_every_member_and_their_folder(data, tmp_path, monkeypatch):
    f = FakeEngine(stop_after=2, cause=Terminated())
    monkeypatch.setattr(tinymnist.population, "train_population", f.train_population)
    with pytest.raises(RunInterrupted) as e:
        runner.run_population([_plan(s, population=2) for s in (0, 1)], data, tmp_path)
    assert [r.seed for r in e.value.results] == [0, 1] and e.value.signal_name == "SIGTERM"
    assert e.value.path == tmp_path / RECIPE.key and e.value.kept_completed is False
    assert [load_result(_paths(tmp_path, s)[0]).status for s in (0, 1)] == ["interrupted"] * 2


def test_an_interrupted_population_says_when_a_members_completed_pair_was_kept(data, tmp_path, monkeypatch):
    f = FakeEngine()
    monkeypatch.setattr(engine, "train", f.train)
    monkeypatch.setattr(tinymnist.population, "train_population", f.train_population)
    run_seed(_plan(1), data, tmp_path)
    f.stop_after, f.cause = 1, KeyboardInterrupt()
    with pytest.raises(RunInterrupted) as e:
        runner.run_population([_plan(s, population=2) for s in (0, 1)], data, tmp_path)
    assert e.value.kept_completed is True and e.value.signal_name == "SIGINT"


# --- a step: chunks, callbacks, the verdict -----------------------------------------------------------------


@pytest.mark.parametrize("stacked", [False, True])
def test_run_step_reports_each_run_and_judges_the_seeds_asked_for(fake, data, tmp_path, stacked):
    seen = []
    opts = TrainOptions(out=tmp_path, requested_population=2)
    runs, verdict = runner.run_step(
        RECIPE, [0, 1, 2], data, CPU, opts, on_run=seen.append, population=2, stacked=stacked
    )
    assert [r.seed for r in runs] == [0, 1, 2] == [r.seed for r in seen] and fake.calls == [0, 0, 0]
    assert verdict.runs == 3 and verdict.missing_seeds == () and verdict.passed
    assert all(r.population == 2 and r.identity["population"] == 2 for r in runs)
    assert [r.identity["stacked"] for r in runs] == ([2, 2, 1] if stacked else [1, 1, 1])


# --- what reaches the engine: every setting of the plan, and nothing else --------------------------------


def test_a_plans_identity_is_everything_it_computes_from(data):
    plan = RunPlan(RECIPE, 5, CPU, max_batches=3, eval_limit=7, population=4, requested_population=2)
    assert plan.identity(data, stacked=2) == {
        "recipe": RECIPE.to_dict(),
        "seed": 5,
        "train_images": 40,
        "test_images": 7,
        "val_images": 0,
        "max_batches": 3,
        "device": "cpu",
        "population": 2,
        "stacked": 2,
    }
    assert RunPlan(RECIPE, 5, CPU, eval_limit=500).identity(data)["test_images"] == 20  # no more than there are


def test_one_seed_trains_with_its_plans_settings(fake, data, tmp_path):
    run_seed(RunPlan(RECIPE, 0, CPU, max_batches=3, eval_limit=7), data, tmp_path)
    run_seed(_plan(1), data, tmp_path, progress=True)
    assert fake.seen == [
        {"data": data, "device": CPU, "max_batches": 3, "eval_limit": 7, "progress": False},
        {"data": data, "device": CPU, "max_batches": None, "eval_limit": None, "progress": True},
    ]


def test_a_population_trains_with_its_plans_settings(fake, data, tmp_path):
    plans = [RunPlan(RECIPE, s, CPU, max_batches=3, eval_limit=7, population=2) for s in (0, 1)]
    runner.run_population(plans, data, tmp_path)
    runner.run_population([_plan(s, population=2) for s in (2, 3)], data, tmp_path, progress=True)
    assert fake.seen == [
        {"data": data, "device": CPU, "max_batches": 3, "eval_limit": 7, "progress": False},
        {"data": data, "device": CPU, "max_batches": None, "eval_limit": None, "progress": True},
    ]


def test_a_step_passes_its_options_to_every_run(fake, data, tmp_path):
    opts = TrainOptions(out=tmp_path, max_batches=3, eval_limit=7, progress=True)
    runner.run_step(RECIPE, [0], data, CPU, opts)
    runner.run_step(RECIPE, [1, 2], data, CPU, opts, population=2, stacked=True)
    setting = {"data": data, "device": CPU, "max_batches": 3, "eval_limit": 7, "progress": True}
    assert fake.seen == [setting, setting]


@pytest.mark.parametrize("stacked", [False, True])
def test_a_step_resumes_when_asked(fake, data, tmp_path, stacked):
    runner.run_step(RECIPE, [0, 1], data, CPU, TrainOptions(out=tmp_path), population=2, stacked=stacked)
    fake.calls.clear()
    opts = TrainOptions(out=tmp_path, resume=True)
    runs, _ = runner.run_step(RECIPE, [0, 1], data, CPU, opts, population=2, stacked=stacked)
    assert [r.status for r in runs] == ["completed"] * 2 and fake.calls == []  # both were complete


def test_a_step_trains_seeds_one_at_a_time_unless_told_to_stack(fake, data, tmp_path, monkeypatch):
    stacked = []
    monkeypatch.setattr(runner, "run_population", lambda plans, *a, **k: stacked.append(plans) or [])
    runs, _ = runner.run_step(RECIPE, [0, 1], data, CPU, TrainOptions(out=tmp_path))
    assert stacked == [] and [r.population for r in runs] == [1, 1] and len(fake.calls) == 2
    # a worker of a CPU population records its population's size, and still trains its seeds one by one
    runs, _ = runner.run_step(RECIPE, [2, 3], data, CPU, TrainOptions(out=tmp_path), population=2)
    assert stacked == [] and [r.population for r in runs] == [2, 2] and len(fake.calls) == 4


def test_a_checkpoint_is_read_onto_the_runs_device_and_a_bad_one_names_the_fix(data, tmp_path, monkeypatch):
    _, _, ckpt = _paths(tmp_path)
    monkeypatch.setattr(engine, "train", FakeEngine(stop_after=1).train)
    with pytest.raises(RunInterrupted):
        run_seed(_plan(), data, tmp_path)
    real, calls = results.load_torch_data, []
    monkeypatch.setattr(runner, "load_torch_data", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    monkeypatch.setattr(engine, "train", FakeEngine().train)
    run_seed(_plan(), data, tmp_path, resume=True)
    assert calls == [((ckpt, CPU), {"fix": "delete it and rerun without --resume"})]


def test_a_damaged_checkpoint_says_to_delete_it_and_rerun_without_resume(data, tmp_path, monkeypatch):
    _, _, ckpt = _paths(tmp_path)
    monkeypatch.setattr(engine, "train", FakeEngine(stop_after=1).train)
    with pytest.raises(RunInterrupted):
        run_seed(_plan(), data, tmp_path)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(ResultsError) as e:
        run_seed(_plan(), data, tmp_path, resume=True)
    assert str(e.value).startswith(f"{ckpt}: ") and str(e.value).endswith("; delete it and rerun without --resume")


def _good_checkpoint(tmp_path, data) -> dict:
    """A checkpoint exactly as the runner writes it after epoch 1 (FakeEngine's snapshot)."""
    _, _, ckpt = _paths(tmp_path / "good")
    with pytest.raises(RunInterrupted):
        run_seed(_plan(), data, tmp_path / "good")
    return load_torch_data(ckpt)


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda c: {"epoch": 1}, "identity, model, optimizer, optimizer_step, history, wall_seconds"),
        (lambda c: {**c, "identity": None}, "identity"),
        (lambda c: {**c, "identity": {}}, "identity"),  # every identity names its recipe and seed
        (lambda c: {**c, "identity": _without(c["identity"], "seed")}, "identity"),
        (lambda c: {**c, "epoch": "1"}, "epoch"),
        (lambda c: {**c, "epoch": True}, "epoch"),
        (lambda c: {**c, "epoch": 2}, "epoch"),  # one epoch of history, not two
        (lambda c: {**c, "epoch": 0, "history": []}, "epoch"),  # a checkpoint follows at least one epoch
        (lambda c: {**c, "history": None}, "epoch"),
        (lambda c: _without(c, "epoch"), "epoch"),
        (lambda c: _without(c, "optimizer"), "optimizer"),
        (lambda c: _without(c, "wall_seconds"), "wall_seconds"),
    ],
)
def test_a_torch_file_that_is_not_a_checkpoint_is_refused_by_resume(data, tmp_path, monkeypatch, damage, named):
    monkeypatch.setattr(engine, "train", FakeEngine(stop_after=1).train)
    state = damage(_good_checkpoint(tmp_path, data))
    _, _, ckpt = _paths(tmp_path)
    ckpt.parent.mkdir(parents=True)
    results.atomic_torch_save(ckpt, state)
    fake = FakeEngine()
    monkeypatch.setattr(engine, "train", fake.train)
    with pytest.raises(RunnerError) as e:
        run_seed(_plan(), data, tmp_path, resume=True)
    assert str(e.value) == (
        f"{ckpt}: not a tinymnist checkpoint ({named} missing or malformed); delete it and rerun without --resume"
    )
    assert fake.calls == []  # refused before the engine saw it


def test_a_checkpoint_as_written_resumes_and_one_of_an_ema_recipe_must_hold_its_ema(data, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "train", FakeEngine(stop_after=1).train)
    good = _good_checkpoint(tmp_path, data)
    _, _, ckpt = _paths(tmp_path)
    ckpt.parent.mkdir(parents=True)
    results.atomic_torch_save(ckpt, good)
    fake = FakeEngine()
    monkeypatch.setattr(engine, "train", fake.train)
    assert run_seed(_plan(), data, tmp_path, resume=True).status == "completed" and fake.calls == [1]
    # an identity of the first version named only its recipe and seed: still resumable
    first = {k: good["identity"][k] for k in ("recipe", "seed")}
    results.atomic_torch_save(ckpt, {**good, "identity": first})
    assert run_seed(_plan(), data, tmp_path, resume=True).status == "completed" and fake.calls == [1, 1]
    # the same checkpoint for a recipe that keeps an EMA: its identity says so, its state has none
    ema = replace(RECIPE, ema=0.999)
    state = {**good, "identity": {**good["identity"], "recipe": ema.to_dict()}}
    _, _, ckpt = (result_path(tmp_path / "e", ema.key, 0, s) for s in (".json", ".pt", ".ckpt"))
    ckpt.parent.mkdir(parents=True)
    results.atomic_torch_save(ckpt, state)
    with pytest.raises(RunnerError) as e:
        run_seed(_plan(recipe=ema), data, tmp_path / "e", resume=True)
    assert str(e.value) == (
        f"{ckpt}: not a tinymnist checkpoint (ema missing or malformed); delete it and rerun without --resume"
    )
    results.atomic_torch_save(ckpt, {**state, "ema": {}})  # with its EMA it resumes
    assert run_seed(_plan(recipe=ema), data, tmp_path / "e", resume=True).status == "completed"


def test_a_population_returns_completed_members_untrained_beside_the_trained(fake, data, tmp_path):
    plans = [_plan(s, population=2) for s in (0, 1)]
    first = runner.run_population(plans, data, tmp_path)
    _paths(tmp_path, 1)[0].unlink()  # seed 1's result is gone: only it trains again
    fake.calls.clear()
    again = runner.run_population(plans, data, tmp_path, resume=True)
    assert fake.calls == [0] and again[0].to_dict() == first[0].to_dict() and again[1].seed == 1


def test_an_interrupted_population_of_one_resumed_member_names_its_folder(data, tmp_path, monkeypatch):
    f = FakeEngine()
    monkeypatch.setattr(tinymnist.population, "train_population", f.train_population)
    plans = [_plan(s, population=2) for s in (0, 1)]
    runner.run_population(plans, data, tmp_path)
    _paths(tmp_path, 1)[0].unlink()
    f.stop_after = 1
    with pytest.raises(RunInterrupted) as e:
        runner.run_population(plans, data, tmp_path, resume=True)
    assert [r.seed for r in e.value.results] == [1] and e.value.path == tmp_path / RECIPE.key


@pytest.mark.parametrize("stop_after", [None, 1])
def test_a_population_that_loses_a_member_is_an_error_not_a_missing_seed(data, tmp_path, monkeypatch, stop_after):
    f = FakeEngine(stop_after=stop_after)

    def drops_one(*a, **k):
        try:
            return f.train_population(*a, **k)[:-1]
        except engine.Interrupted as e:
            raise engine.Interrupted(e.trained[:-1], e.cause) from None

    monkeypatch.setattr(tinymnist.population, "train_population", drops_one)
    with pytest.raises(ValueError, match="zip"):
        runner.run_population([_plan(s, population=2) for s in (0, 1)], data, tmp_path)


# --- how a recipe's seeds train in one process: a stacked model, or one after another ----------------------
# (seeds on several CPU cores are jobs of an executor: tests/test_executors.py)


@pytest.mark.parametrize(
    "device, population, how",
    [("cpu", 2, "serial"), ("cpu", 1, "serial"), ("cuda", 2, "stacked"), ("cuda", 1, "serial")],
)
def test_how_seeds_train(device, population, how):
    assert runner.how_trained(torch.device(device), population) == how


def test_a_recipe_on_the_cpu_trains_serially_and_records_population_1(fake, data, tmp_path):
    seen = []
    runs, verdict = runner.train_recipe(RECIPE, [0, 1], data, CPU, TrainOptions(out=tmp_path), 4, seen.append)
    assert [r.population for r in runs] == [1, 1] and [r.seed for r in seen] == [0, 1] and verdict.runs == 2
    assert len(fake.seen) == 2  # engine.train twice: no stacked model


def test_a_recipe_on_cuda_trains_as_a_stacked_population(fake, data, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "device_name", lambda d: "a GPU")
    seen = []
    cuda = torch.device("cuda")
    runs, _ = runner.train_recipe(RECIPE, [0, 1], data, cuda, TrainOptions(out=tmp_path), 2, seen.append)
    assert [r.population for r in runs] == [2, 2] and [r.seed for r in seen] == [0, 1]
    assert fake.seen == [{"data": data, "device": cuda, "max_batches": None, "eval_limit": None, "progress": False}]
