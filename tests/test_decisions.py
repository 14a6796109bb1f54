"""Small decisions with large consequences, each pinned by its exact outcome: what a resume compares a schema-1
result by, which layer sizes a recipe may hold, what a recipe diff leaves out, and when compare has nothing to
judge. (mutmut found each of these unchecked: reports/mutation/.)"""

from dataclasses import replace

import pytest

from tests.synth import make_result, step4_runs
from tinymnist.compare import Thresholds, accuracy_check
from tinymnist.recipes import STEP4, RecipeError, _positive_sizes, validate
from tinymnist.runner import _identity_of, identity_mismatch
from tinymnist.summary import summarize


def test_a_schema_1_result_is_resumed_over_by_the_four_fields_it_recorded():
    r = replace(make_result(4, 3, [99.0]), identity={}, test_images=500, device="cuda")
    assert _identity_of(r) == {"recipe": r.recipe, "seed": 3, "test_images": 500, "device": "cuda"}


def test_a_result_with_an_identity_is_resumed_over_by_all_of_it():
    ident = {"recipe": STEP4.to_dict(), "seed": 3, "train_images": 3000, "val_images": 0}
    r = replace(make_result(4, 3, [99.0]), identity=ident)
    assert _identity_of(r) is ident
    # a field that only a full identity records still refuses: fewer training images is another run
    assert identity_mismatch(_identity_of(r), {**ident, "train_images": 60000}) == "train_images 3000 -> 60000"


def test_layer_sizes_of_one_are_allowed_and_nested_blocks_are_checked_size_by_size():
    _positive_sizes("head", 1)
    _positive_sizes("channels", [1, 2, 3])
    _positive_sizes("blocks", [[4, 4, 4], [8, 8, 8], [8, 8, 8]])
    _positive_sizes("blocks", ((1,), (2, 3)))
    for bad in (0, [4, 0], [[4, 4], [8, 0]], [[4, 4.0]], [[True]], [[]]):
        with pytest.raises(RecipeError, match="layer sizes must be integers >= 1"):
            _positive_sizes("blocks", bad)


def test_the_anchors_block_network_passes_validation_with_its_nested_sizes():
    recipe = replace(STEP4, model="blocks", model_kwargs={"blocks": [[4, 4, 4], [8, 8, 8], [8, 8, 8]]})
    assert validate(recipe) is recipe
    with pytest.raises(RecipeError, match=r"model_kwargs blocks=\[\[4, 4, 4\], \[8, 0, 8\]\]"):
        validate(replace(recipe, model_kwargs={"blocks": [[4, 4, 4], [8, 0, 8]]}))


def test_a_recipe_diff_names_changed_fields_but_not_the_seed_write_up():
    other = replace(STEP4, lr=0.05, seed_reference={"best_test": 1.0})
    assert STEP4.diff(other) == ["lr 0.1 -> 0.05"]
    assert STEP4.diff(replace(STEP4, seed_reference={})) == []


def test_compare_has_no_accuracy_verdict_where_either_side_has_no_finished_epoch():
    finished = summarize(step4_runs())
    empty = summarize([replace(make_result(4, 0, [99.0]), epochs=[], status="diverged")])
    t = Thresholds()
    assert accuracy_check(finished, empty, t) is None
    assert accuracy_check(empty, finished, t) is None
    assert accuracy_check(finished, finished, t) is not None
