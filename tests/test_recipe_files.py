"""Recipe files and import paths read in-process, each outcome pinned exactly: the fields a file sets, what it
inherits from its base, and every refusal word for word. (test_plugins drives the same files through an
installed package in a subprocess; these run where mutation testing can see them.)"""

from dataclasses import replace

import pytest

from tinymnist.recipes import (
    BUILTIN_KEYS,
    STEP2,
    STEP4,
    TUNABLE,
    Expectation,
    RecipeError,
    from_table,
    load_recipe_file,
    plugin_recipes,
    resolve_recipe,
)
from tinymnist.results import ResultsError

FIELDS = ", ".join(TUNABLE)
BUILTINS = ", ".join(BUILTIN_KEYS)
SEED_RULE = "must be a non-empty list of distinct seeds"
SEED_TYPE = "not a list of seeds, each an integer in [0, 2**32)"
NAME_RULE = (
    "must be a folder name of letters, digits, '.', '_' or '-' (no '/', not starting with '.'), at most 64 "
    "characters: results go to OUT/<name>/"
)


def test_a_file_sets_its_fields_over_step_4_and_keeps_the_rest():
    r = from_table({"name": "mine", "lr": 0.05, "epochs": 3, "seeds": [5, 6]}, "f.toml")
    assert r == replace(STEP4, key="mine", name="mine", lr=0.05, epochs=3, seeds=(5, 6), seed_reference={})


def test_a_file_names_its_base_description_and_whole_expectation():
    r = from_table(
        {"name": "m", "base": "step2", "description": "a story", "expect": {"max_params": 100, "min_final": 99}},
        "f.toml",
    )
    assert r.step == STEP2.step and r.model == STEP2.model and r.name == "a story" and r.key == "m"
    assert r.expect == Expectation(max_params=100, min_final=99.0)  # the base's thresholds do not leak in


@pytest.mark.parametrize(
    "table, message",
    [
        ([1], "f.toml: a recipe is a table of fields, not a list"),
        (
            {"name": "x", "lrr": 0.1, "zz": 1},
            f"f.toml: unknown key 'lrr'; a recipe file holds name, base, description, seeds, expect and the recipe "
            f"fields {FIELDS}",
        ),
        ({"lr": 0.1}, 'f.toml: no name; add a line name = "my-recipe", the results folder OUT/my-recipe/'),
        ({"name": "../x"}, f"f.toml: name '../x' {NAME_RULE}"),
        ({"name": ".x"}, f"f.toml: name '.x' {NAME_RULE}"),
        ({"name": "a" * 65}, f"f.toml: name '{'a' * 65}' {NAME_RULE}"),
        ({"name": 7}, f"f.toml: name 7 {NAME_RULE}"),
        ({"name": "step4"}, "f.toml: name 'step4' is a built-in recipe's; choose another name"),
        ({"name": "x", "base": "step9"}, f"f.toml: base 'step9' does not exist; choose one of {BUILTINS}"),
        ({"name": "x", "base": 4}, f"f.toml: base 4 does not exist; choose one of {BUILTINS}"),
        ({"name": "x", "lr": "fast"}, "f.toml: recipe field lr is 'fast', not a float"),
        ({"name": "x", "seeds": []}, f"f.toml: seeds [] {SEED_RULE}"),
        ({"name": "x", "seeds": [1, 1]}, f"f.toml: seeds [1, 1] {SEED_RULE}"),
        ({"name": "x", "seeds": ["a"]}, f"f.toml: recipe field seeds is ['a'], {SEED_TYPE}"),
        ({"name": "x", "expect": 3}, "f.toml: [expect] must be a table of Expectation fields"),
        (
            {"name": "x", "expect": {"min_acc": 99, "zz": 1}},
            "f.toml: [expect] has unknown key 'min_acc'; it holds max_params, min_best_test, min_last_k, last_k, "
            "min_final, min_mean_final",
        ),
        (
            {"name": "x", "expect": {"max_params": "many"}},
            "f.toml: recipe field expect.max_params is 'many', not a int or null",
        ),
    ],
)
def test_a_bad_table_is_refused_by_where_and_field(table, message):
    with pytest.raises(RecipeError) as e:
        from_table(table, "f.toml")
    assert str(e.value) == message


def test_the_longest_name_and_every_allowed_character_are_accepted():
    for name in ("a" * 64, "A-b_c.9", "9"):
        assert from_table({"name": name}, "f.toml").key == name


def test_a_recipe_file_is_read_as_toml_and_its_errors_name_the_file(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('name = "good"\nlr = 0.02\n[expect]\nmax_params = 9000\n')
    r = load_recipe_file(good)
    assert (r.key, r.lr, r.expect) == ("good", 0.02, Expectation(max_params=9000))
    cases = {
        "typed.toml": ('name = "x"\nlr = "fast"\n', "{p}: recipe field lr is 'fast', not a float"),
        "named.toml": ('name = "step4"\n', "{p}: name 'step4' is a built-in recipe's; choose another name"),
    }
    for file, (body, message) in cases.items():
        p = tmp_path / file
        p.write_text(body)
        with pytest.raises(RecipeError) as e:
            load_recipe_file(p)
        assert str(e.value) == message.format(p=p)
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = \n")
    with pytest.raises(RecipeError, match=r"bad\.toml: not valid TOML \(.*\); fix the file$"):
        load_recipe_file(bad)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(RecipeError) as e:
        load_recipe_file(latin)
    assert str(e.value) == f"{latin}: not UTF-8 text; a recipe file is TOML"


USER_RECIPES = """
from dataclasses import replace
from tinymnist.recipes import STEP4

as_table = {"name": "tabled", "lr": 0.03}
mistyped = {"name": "typo", "lr": "fast"}
as_recipe = replace(STEP4, key="mine", name="mine")
def as_callable():
    return {"name": "called", "epochs": 2, "expect": {"max_params": 10000}}
def too_short():  # step 4's gate (the last 3 epochs), inherited by a 2-epoch recipe: it can only fail
    return {"name": "short", "epochs": 2}
def exploding():
    raise RuntimeError("no")
shadowing = replace(STEP4, lr=0.5)
the_step = STEP4
bad_key = replace(STEP4, key="../up")
bad_seeds = replace(STEP4, key="bs", seeds=("a",))
bad_epochs = replace(STEP4, key="be", epochs="3")
"""


@pytest.fixture
def usermod(tmp_path, monkeypatch):
    (tmp_path / "user_recipes.py").write_text(USER_RECIPES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_recipes"


def test_recipes_by_file_builtin_name_and_import_path(usermod, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.toml").write_text('name = "filed"\n')
    assert resolve_recipe("r.toml").key == "filed"
    (tmp_path / "plain").write_text('name = "suffixless"\n')  # an existing file is a file, whatever its name
    assert resolve_recipe("plain").key == "suffixless"
    with pytest.raises(ResultsError) as e:  # a .toml name is a file, even a missing one
        resolve_recipe("missing.toml")
    assert str(e.value) == "missing.toml: cannot be read (No such file or directory)"
    assert resolve_recipe("step2") is BUILTIN_KEYS["step2"]
    assert resolve_recipe(f"{usermod}:as_table") == from_table({"name": "tabled", "lr": 0.03}, "x")
    assert resolve_recipe(f"{usermod}:as_recipe").key == "mine"
    assert resolve_recipe(f"{usermod}:as_callable").epochs == 2
    assert resolve_recipe(f"{usermod}:the_step") is STEP4  # a built-in recipe itself is no shadow


@pytest.mark.parametrize(
    "attr, message",
    [
        ("exploding", "recipe 'user_recipes:exploding': calling it raised RuntimeError: no"),
        (
            "shadowing",
            "recipe 'user_recipes:shadowing': its key 'step4' is a built-in recipe's; give it a name of its own",
        ),
        ("bad_key", "recipe 'user_recipes:bad_key': key '../up' is not a plain folder name"),
        # A Recipe object is typed as a file's table is (each was an internal error once training began).
        ("bad_seeds", f"recipe 'user_recipes:bad_seeds': recipe field seeds is ('a',), {SEED_TYPE}"),
        ("bad_epochs", "recipe 'user_recipes:bad_epochs': recipe field epochs is '3', not a int"),
        ("mistyped", "recipe 'user_recipes:mistyped': recipe field lr is 'fast', not a float"),
        (
            "too_short",
            "user_recipes:too_short: expect.last_k=3 is more than its 2 epochs, a gate that can only fail; lower "
            "last_k or train more epochs",
        ),
    ],
)
def test_an_import_path_that_cannot_stand_for_a_recipe_is_named(usermod, attr, message):
    with pytest.raises(RecipeError) as e:
        resolve_recipe(f"{usermod}:{attr}")
    # an error the user's code raised also says where (" (at FILE:LINE (function))"): the message, then that
    assert str(e.value) == message or str(e.value).startswith(message + " (at ")


def test_an_unknown_recipe_name_lists_what_is_known(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    known = ", ".join([*BUILTIN_KEYS, *sorted(plugin_recipes())])  # an environment may hold plugins
    with pytest.raises(RecipeError) as e:
        resolve_recipe("nosuch")
    assert str(e.value) == (
        f"--recipe nosuch: no such file, and no recipe of that name (known: {known}); give a .toml file, a "
        "recipe name or an import path package.module:object"
    )


def test_a_recipe_path_that_is_no_file_of_a_recipes_size_is_refused_by_name(tmp_path):
    with pytest.raises(ResultsError) as e:
        load_recipe_file(tmp_path)
    assert str(e.value) == f"{tmp_path}: a folder; pass a recipe file"
    big = tmp_path / "big.toml"
    big.write_text('name = "big"\n' + "#" * (1 << 20) + "\n")  # valid TOML, just over 1 MiB
    with pytest.raises(ResultsError) as e:
        load_recipe_file(big)
    size = big.stat().st_size
    assert str(e.value) == f"{big}: {size:,} bytes, too large for a recipe file (at most 1,048,576)"


@pytest.mark.parametrize(
    "table, message",
    [
        ({"name": "x", "base": ["step4"]}, f"f.toml: base ['step4'] does not exist; choose one of {BUILTINS}"),
        (
            {"name": "x", "seeds": [-1]},
            "f.toml: recipe field seeds is [-1], not a list of seeds, each an integer in [0, 2**32)",
        ),
        (
            {"name": "x", "seeds": [2**32]},
            "f.toml: recipe field seeds is [4294967296], not a list of seeds, each an integer in [0, 2**32)",
        ),
    ],
)
def test_a_base_or_seed_list_of_the_wrong_kind_is_named(table, message):
    with pytest.raises(RecipeError) as e:
        from_table(table, "f.toml")
    assert str(e.value) == message


PLUGIN = """
from dataclasses import replace
from tinymnist.recipes import STEP4
shipped = {"name": "shipped", "epochs": 4}
raise_on_import = None
"""


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A package installed as pip leaves one (a module and its .dist-info with entry points) on sys.path:
    importlib.metadata finds it as it finds any installed plugin."""
    (tmp_path / "recipe_plugin.py").write_text(PLUGIN)
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('a dependency is missing')\n")
    info = tmp_path / "recipe_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: recipe-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[tinymnist.recipes]\nshipped = recipe_plugin:shipped\nstep4 = recipe_plugin:shipped\n"
        "broken = broken_plugin:anything\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_installed_plugins_recipes_are_found_by_name_and_cannot_shadow_a_step(installed_plugin):
    found = plugin_recipes()
    assert {"shipped", "broken"} <= found.keys() and "step4" not in found
    assert found["shipped"].value == "recipe_plugin:shipped"
    assert resolve_recipe("shipped") == from_table({"name": "shipped", "epochs": 4}, "x")
    assert resolve_recipe("step4") is STEP4  # the built-in, not the plugin's entry of that name


def test_a_broken_plugin_breaks_only_the_recipe_that_uses_it(installed_plugin):
    with pytest.raises(RecipeError) as e:
        resolve_recipe("broken")
    assert str(e.value).startswith(
        "recipe 'broken' (plugin broken_plugin:anything) cannot be loaded: ImportError: a dependency is missing (at "
    )
    assert resolve_recipe("shipped").epochs == 4


def test_an_import_path_that_does_not_resolve_is_named_as_a_recipes(usermod):
    from tinymnist.models.registry import ModelError

    cases = {
        "nosuch_module:x": "recipe 'nosuch_module:x': module 'nosuch_module' not found; install it or add its folder "
        "to PYTHONPATH",
        f"{usermod}:missing": f"recipe '{usermod}:missing': {usermod} has no attribute 'missing'",
    }
    for spec, message in cases.items():
        with pytest.raises(ModelError) as e:
            resolve_recipe(spec)
        assert str(e.value) == message


# --- --set values against the type of the field they set (reports/mutation/: recipes._coerce) -----------------

from tinymnist.recipes import with_overrides  # noqa: E402


@pytest.mark.parametrize(
    "item, kind, got",
    [
        ("nesterov=1", "bool", "1"),
        ("lr=true", "float", "True"),
        ("lr=abc", "float", "'abc'"),
        ("epochs=true", "int", "True"),
        ("epochs=2.5", "int", "2.5"),
        ("lr_points=3", "tuple", "3"),
        ("model=3", "str", "3"),
    ],
)
def test_a_set_value_of_the_wrong_type_is_refused_naming_the_type(item, kind, got):
    with pytest.raises(RecipeError) as e:
        with_overrides(STEP4, [item])
    key = item.split("=")[0]
    assert str(e.value) == f"--set {item}: {key} takes a {kind}, got {got}"


def test_a_set_value_of_the_right_type_is_taken_and_an_integer_learning_rate_is_a_float():
    r = with_overrides(STEP4, ["nesterov=true", "lr=1", "epochs=3", "lr_points=[[0, 0.5], [3, 1]]"])
    assert r.nesterov is True and r.epochs == 3
    assert r.lr == 1.0 and type(r.lr) is float  # recorded as 1.0, as a --set lr=1.0 would be
    assert [list(p) for p in r.lr_points] == [[0, 0.5], [3, 1]]


# --- every range a recipe value is checked against, at both ends (reports/mutation/: recipes._in) ------------

from tinymnist.recipes import MAX_LR, budget_failure, validate  # noqa: E402


@pytest.mark.parametrize(
    "field, value, span",
    [
        ("lr", 0.0, "(0, 100]"),  # open below: a learning rate of 0 trains nothing
        ("lr", MAX_LR * 1.01, "(0, 100]"),
        ("lr", float("inf"), "(0, 100]"),
        ("lr", float("nan"), "(0, 100]"),
        ("momentum", 1.0, "[0, 1)"),  # open above
        ("momentum", -0.1, "[0, 1)"),
        ("max_degrees", 180.5, "[0, 180]"),
        ("aug_prob", 1.5, "[0, 1]"),
    ],
)
def test_a_value_outside_its_range_is_refused_naming_the_range(field, value, span):
    with pytest.raises(RecipeError) as e:
        validate(replace(STEP4, **{field: value}))
    assert str(e.value) == f"{field}={value!r} is outside its range: it must be a finite number in {span}"


@pytest.mark.parametrize(
    "field, value", [("lr", MAX_LR), ("momentum", 0.0), ("max_degrees", 180.0), ("aug_prob", 1.0), ("ema", 0.0)]
)
def test_a_value_at_the_closed_end_of_its_range_is_taken(field, value):
    assert getattr(validate(replace(STEP4, **{field: value})), field) == value


def test_the_parameter_budget_is_checked_on_the_model_the_recipe_builds():
    anchor = replace(STEP4, model="blocks", model_kwargs={})  # 3,762 parameters
    assert budget_failure(replace(anchor, expect=Expectation(max_params=3_763))) is None
    at = budget_failure(replace(anchor, expect=Expectation(max_params=3_762)))  # fewer than: equal fails
    assert at == "step 4: model 'blocks' has 3,762 parameters, must be fewer than 3,762"
    wide = replace(anchor, model_kwargs={"blocks": [[8, 8, 8], [12, 12, 12], [12, 12, 12]]})
    assert budget_failure(replace(wide, expect=Expectation(max_params=5_000))) == (
        "step 4: model 'blocks' has 8,986 parameters, must be fewer than 5,000"
    )
    assert budget_failure(replace(wide, expect=Expectation())) is None  # no budget, nothing to check


LR_POINTS_RULE = (
    "give at least two [epoch, factor] knots, epochs rising from 0 and factors in [0, 1] of lr, e.g. "
    "[[0, 0.5], [3, 1], [9, 0.1], [15, 0]]"
)


@pytest.mark.parametrize(
    "points",
    [
        ((0, 1.0),),  # one knot
        ((0, 1.0), (5, 0.5, 1)),  # a knot of three
        ((0, 1.0), (5,)),
        ((0, True), (5, 0.5)),  # a bool is not a factor
        ((0, 1.0), ("5", 0.5)),
        ((1, 1.0), (5, 0.5)),  # not from 0
        ((0, 1.0), (5, 0.5), (5, 0.1)),  # not rising
        ((0, 1.5), (5, 0.5)),  # a factor above 1
        ((0, 1.0), (5, -0.1)),
        ((0, 1.0), (float("nan"), 0.5)),
        ((0, 1.0), (5, float("nan"))),
        "ramp",
    ],
)
def test_piecewise_knots_are_refused_unless_they_make_a_schedule(points):
    with pytest.raises(RecipeError) as e:
        validate(replace(STEP4, schedule="piecewise", lr_points=points))
    assert str(e.value) == f"lr_points={points!r}: {LR_POINTS_RULE}"


def test_piecewise_knots_that_make_a_schedule_are_taken_and_knots_without_one_are_refused():
    two = ((0, 1.0), (15, 0))  # two knots are enough
    assert validate(replace(STEP4, schedule="piecewise", lr_points=two)).lr_points == two
    anchor = ((0, 0.5), (3, 1), (9, 0.1), (15, 0))
    assert validate(replace(STEP4, schedule="piecewise", lr_points=anchor)).lr_points == anchor
    assert validate(replace(STEP4, schedule="onecycle", lr_points=())).lr_points == ()
    with pytest.raises(RecipeError) as e:
        validate(replace(STEP4, schedule="onecycle", lr_points=anchor))
    assert str(e.value) == "lr_points is set, but schedule is not 'piecewise'; set schedule=piecewise or drop it"


def test_set_splits_at_the_first_equals_sign_and_needs_one_naming_a_field():
    r = with_overrides(STEP4, ['model_kwargs={"note": "a=b"}'])  # an '=' inside the value is the value's
    assert r.model_kwargs == {"note": "a=b"}
    for item in ("lr", "colour=red"):
        with pytest.raises(RecipeError) as e:
            with_overrides(STEP4, [item])
        assert str(e.value) == f"--set {item}: expected KEY=VALUE with KEY one of {FIELDS}"


@pytest.mark.parametrize(
    "field", ["momentum", "weight_decay", "warmup_frac", "label_smoothing", "ema", "max_shift", "max_scale"]
)
def test_every_fraction_is_checked_below_one_by_its_own_name(field):
    for value in (1.0, -0.5):
        with pytest.raises(RecipeError) as e:
            validate(replace(STEP4, **{field: value}))
        assert str(e.value) == f"{field}={value!r} is outside its range: it must be a finite number in [0, 1)"
    assert getattr(validate(replace(STEP4, **{field: 0.5})), field) == 0.5


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"batch_size": 0}, "batch_size=0 is outside its range: it must be an integer >= 1"),
        ({"epochs": 2.5}, "epochs=2.5 is outside its range: it must be an integer >= 1"),
        ({"epochs": True}, "epochs=True is outside its range: it must be an integer >= 1"),
        ({"optimizer": "adam"}, "optimizer='adam' is not known: choose one of sgd, adamw"),
        ({"schedule": "cosine"}, "schedule='cosine' is not known: choose one of constant, onecycle, piecewise"),
        ({"precision": "fp8"}, "precision='fp8' is not known: choose one of fp32, bf16"),
        ({"nesterov": True, "optimizer": "adamw"}, "nesterov=true needs optimizer sgd with momentum > 0"),
        ({"nesterov": True, "momentum": 0.0}, "nesterov=true needs optimizer sgd with momentum > 0"),
        ({"model_kwargs": [1]}, "model_kwargs=[1] must be a JSON object"),
        (
            {"model_kwargs": {"dropout": 1.0}},
            "model_kwargs dropout=1.0 is outside its range: it must be a finite number in [0, 1)",
        ),
        ({"model_kwargs": {"bias": 1}}, "model_kwargs bias=1 must be true or false"),
        ({"model_kwargs": {"num_classes": 9}}, "model_kwargs num_classes=9: MNIST has 10 classes"),
        ({"model_kwargs": {"channels": [0, 4]}}, "model_kwargs channels=[0, 4]: layer sizes must be integers >= 1"),
    ],
)
def test_a_recipe_value_that_cannot_run_is_refused_word_for_word(changes, message):
    with pytest.raises(RecipeError) as e:
        validate(replace(STEP4, **changes))
    assert str(e.value) == message


def test_values_that_can_run_are_taken():
    ok = replace(STEP4, batch_size=1, epochs=1, optimizer="adamw", schedule="constant", precision="bf16")
    assert validate(ok) == ok
    assert validate(replace(STEP4, nesterov=True)).nesterov  # sgd with momentum 0.9
    blocks = replace(STEP4, model="blocks", model_kwargs={"bias": False, "num_classes": 10, "dropout": 0.0})
    assert validate(blocks) == blocks


def test_an_unknown_step_is_refused_naming_the_known_ones():
    from tinymnist.recipes import get_recipe

    with pytest.raises(RecipeError) as e:
        get_recipe(9)
    assert str(e.value) == "unknown step 9; known steps: 1, 2, 3, 4, 5, 6"
    assert get_recipe(4) is STEP4


def tiny_net(act: str = "relu"):
    """A user's model by import path, with a keyword argument that is not a layer size."""
    import torch.nn as nn

    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.ReLU() if act == "relu" else nn.Tanh())


def test_a_users_model_checks_its_own_arguments_and_a_built_in_is_built_as_configured():
    from tinymnist.models.registry import ModelError

    user = replace(STEP4, model="tests.test_recipe_files:tiny_net", model_kwargs={"act": "tanh"})
    assert validate(user) == user  # not a layer size, and not the harness's to check
    unbuildable = replace(STEP4, model="blocks", model_kwargs={"blocks": [[4]] * 6})  # five pools: 28 px -> 0
    with pytest.raises(ModelError) as e:
        validate(unbuildable)
    assert str(e.value).startswith("model 'blocks' cannot run on a (2, 1, 28, 28) batch (RuntimeError: ")


# --- the recipe a results file recorded (reports/mutation/: recipes.Recipe.from_dict) -------------------------

from tinymnist.recipes import Recipe  # noqa: E402


def test_a_recorded_recipe_without_expectations_reads_as_expecting_nothing():
    d = STEP4.to_dict()
    del d["expect"]
    assert Recipe.from_dict(d).expect == Expectation()
    assert Recipe.from_dict(STEP4.to_dict()) == STEP4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"zeta": 1, "alpha": 2}, "recipe has fields this harness does not know: alpha, zeta"),
        ({"expect": [1]}, "recipe expect is list, not a table of Expectation fields"),
        ({"expect": {"min_mean": 99, "max": 1}}, "recipe expect has fields this harness does not know: max, min_mean"),
    ],
)
def test_a_recorded_recipe_this_harness_cannot_read_is_refused_word_for_word(change, message):
    with pytest.raises(ValueError) as e:
        Recipe.from_dict({**STEP4.to_dict(), **change})
    assert str(e.value) == message


# --- the field types a recorded recipe is read with (Recipe.from_dict, typed) ---------------------------------
from tinymnist.recipes import typed  # noqa: E402


def test_integers_are_kept_to_64_bits_and_named_when_they_are_not():
    assert typed("epochs", (int,), 2**63 - 1) == 2**63 - 1
    assert typed("epochs", (int,), -(2**63) + 1) == -(2**63) + 1
    for big in (2**63, -(2**63), 2**64):
        with pytest.raises(ValueError) as e:
            typed("epochs", (int,), big)
        assert str(e.value) == f"recipe field epochs is {big!r}, not a int"


def test_an_expectation_must_be_finite_and_says_which_one():
    with pytest.raises(ValueError) as e:
        Recipe.from_dict({**STEP4.to_dict(), "expect": {"min_mean_final": float("inf")}})
    assert str(e.value) == "recipe field expect.min_mean_final is inf, not a float or null"
    with pytest.raises(ValueError) as e:
        Recipe.from_dict({**STEP4.to_dict(), "expect": {"min_final": "high"}})
    assert str(e.value) == "recipe field expect.min_final is 'high', not a float or null"
    # a setting's own range is validate's to judge, with its own message; typed only checks the kind
    assert typed("lr", (float,), float("inf")) == float("inf")


def test_a_recorded_field_of_the_wrong_kind_is_named():
    with pytest.raises(ValueError) as e:
        Recipe.from_dict({**STEP4.to_dict(), "lr": "fast"})
    assert str(e.value) == "recipe field lr is 'fast', not a float"


def test_seeds_are_32_bit_and_a_seed_out_of_range_says_what_a_seed_is():
    assert typed("seeds", (list,), [0, 100, 2**32 - 1]) == [0, 100, 2**32 - 1]
    for bad in ([2**32], [-1], [True]):
        with pytest.raises(ValueError) as e:
            typed("seeds", (list,), bad)
        assert str(e.value) == f"recipe field seeds is {bad!r}, not a list of seeds, each an integer in [0, 2**32)"
    with pytest.raises(ValueError) as e:
        Recipe.from_dict({**STEP4.to_dict(), "seeds": [2**32]})
    assert "list of seeds, each an integer in [0, 2**32)" in str(e.value)


def test_a_long_value_is_cut_to_60_characters_in_its_message():
    whole = "x" * 57  # repr 59 characters: shown whole
    with pytest.raises(ValueError) as e:
        typed("lr", (float,), whole)
    assert str(e.value) == f"recipe field lr is {whole!r}, not a float"
    cut = "y" * 58  # repr 60 characters: its first 57 and "..."
    with pytest.raises(ValueError) as e:
        typed("lr", (float,), cut)
    assert str(e.value) == f"recipe field lr is '{'y' * 56}..., not a float"


def test_a_recipe_without_seeds_gets_the_default_three():
    d = STEP4.to_dict()
    del d["seeds"]
    assert Recipe.from_dict(d).seeds == (0, 1, 2)
    assert Recipe.from_dict({**d, "seeds": [5, 6]}).seeds == (5, 6)  # and one that has them keeps its own


def test_knots_from_json_or_toml_are_one_form_so_equal_recipes_compare_equal():
    as_lists = replace(STEP4, schedule="piecewise", lr_points=[[0, 1.0], [15, 0]])
    as_tuples = replace(STEP4, schedule="piecewise", lr_points=((0, 1.0), (15, 0)))
    assert as_lists == as_tuples
    assert as_lists.to_dict()["lr_points"] == [[0, 1.0], [15, 0]]
    assert Recipe.from_dict(as_tuples.to_dict()) == as_tuples
    # a knot that is not a pair reaches validate's message as it was given, not a TypeError
    broken = replace(STEP4, schedule="piecewise", lr_points=[[0, 1.0], 5])
    assert broken.lr_points == ((0, 1.0), 5)
    with pytest.raises(RecipeError) as e:
        validate(broken)
    assert str(e.value) == f"lr_points=((0, 1.0), 5): {LR_POINTS_RULE}"
    # and a recorded recipe that would not validate is still written back as it was read (a resume's
    # identity message prints the recipe a checkpoint holds)
    assert broken.to_dict()["lr_points"] == [[0, 1.0], 5]


@pytest.mark.parametrize(
    "expect, message",
    [
        ({"max_params": -1}, "expect.max_params=-1 is outside its range: an integer >= 1, or leave it out"),
        ({"last_k": 0, "min_last_k": 99.4}, "expect.last_k=0 is outside its range: an integer >= 1"),
        ({"min_final": 101.0}, "expect.min_final=101.0 is outside its range"),
    ],
)
def test_a_gate_that_can_only_fail_or_checks_nothing_is_refused_as_usage(expect, message):
    """The independent sweep of issue 30: max_params=-1 was a gate failure (exit 1) and last_k=0 passed."""
    from tinymnist.recipes import validate

    with pytest.raises(RecipeError) as e:
        validate(from_table({"name": "x", "base": "step4", "expect": expect}, "f.toml"))
    assert message in str(e.value)
