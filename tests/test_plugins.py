"""A user's own model and recipe, the way a user brings them: the example plugin package installed outside the
checkout (pip, into a temporary folder), then tinymnist run as a subprocess from another folder."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

EXAMPLE = REPO / "examples"


def _pip_install(src: Path, target: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(src)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    _pip_install(EXAMPLE / "plugin", target)
    return target


@pytest.fixture(scope="session")
def broken_plugins(tmp_path_factory) -> Path:
    """A package whose model plugin fails to import, and one that claims a built-in's name."""
    src = tmp_path_factory.mktemp("broken-src")
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [project]
            name = "broken-plugin"
            version = "0.1"
            [project.entry-points."tinymnist.models"]
            broken = "broken_plugin:build"
            step4 = "broken_plugin:shadow"
            [project.entry-points."tinymnist.recipes"]
            broken-recipe = "broken_plugin:recipe"
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"
            """
        )
    )
    (src / "broken_plugin.py").write_text("raise ImportError('this plugin is broken on purpose')\n")
    target = tmp_path_factory.mktemp("broken-site")
    _pip_install(src, target)
    return target


def tm(args, cwd, *paths: Path, mnist_root=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths)), "OMP_NUM_THREADS": "1"}
    if mnist_root is not None:
        env["MNIST_ROOT"] = str(mnist_root)
    return subprocess.run([sys.executable, "-m", "tinymnist", *args], cwd=cwd, env=env, capture_output=True, text=True)


def recipe_file(folder: Path, text: str, name: str = "r.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_models_lists_the_plugin(plugin_path, tmp_path):
    done = tm(["models"], tmp_path, plugin_path)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("sep4k"))
    assert "4,410" in line and "plugin tinymnist_example.nets:build" in line


def test_recipes_lists_built_in_and_plugin_recipes_and_names_a_broken_one(plugin_path, broken_plugins, tmp_path):
    done = tm(["recipes"], tmp_path, plugin_path)
    assert done.returncode == 0, done.stderr
    lines = {x.split()[0]: x for x in done.stdout.splitlines()}
    assert list(lines)[:6] == [f"step{n}" for n in range(1, 7)]
    assert "8,952  built-in; gate: max_params=10000, min_last_k=99.4, last_k=3" in lines["step4"]
    assert "sep4k" in lines["sep4k-recipe"] and "plugin tinymnist_example.recipes:recipe" in lines["sep4k-recipe"]
    broken = tm(["recipes"], tmp_path, plugin_path, broken_plugins)
    assert broken.returncode == 2
    assert "sep4k-recipe" in broken.stdout and "broken-recipe" in broken.stdout  # the others still list
    assert broken.stderr.strip().splitlines() == [
        "tinymnist recipes: error: plugin recipe(s) that cannot be loaded: broken-recipe (broken_plugin:recipe); "
        "fix or uninstall the package that provides them"
    ]


@pytest.mark.parametrize("model", ["sep4k", "tinymnist_example.nets:build"])
def test_recipe_file_trains_a_plugin_model(plugin_path, tmp_path, mnist_root, model):
    text = (EXAMPLE / "sep4k.toml").read_text().replace('model = "sep4k"', f'model = "{model}"')
    recipe = recipe_file(tmp_path, text)
    out = tmp_path / "out"
    done = tm(
        ["train", "--recipe", str(recipe), "--seeds", "0", "--dry-run", "--out", str(out), "--quiet"],
        tmp_path,
        plugin_path,
        mnist_root=mnist_root,
    )
    assert done.returncode == 0, done.stderr
    r = json.loads((out / "sep4k" / "seed0.json").read_text())
    assert r["params"] == 2782 and r["recipe"]["model"] == model and r["recipe"]["key"] == "sep4k"
    assert r["recipe"]["model_kwargs"] == {"width": 12} and r["recipe"]["expect"]["max_params"] == 5000
    # The results alone are enough for report, compare and export (the model rebuilt from its record).
    assert tm(["report", str(out), "--out", str(tmp_path / "rep")], tmp_path, plugin_path).returncode == 0
    assert "## sep4k:" in (tmp_path / "rep" / "REPORT.md").read_text()
    cmp = tm(["compare", str(out), str(out)], tmp_path, plugin_path)
    assert cmp.returncode == 0 and "| sep4k | gate |" in cmp.stdout, cmp.stdout + cmp.stderr
    onnx = tmp_path / "m.onnx"
    vouch = ["--model", model] if ":" in model else []  # an import path runs only when the user names it
    exp = tm(
        ["export", "--checkpoint", str(out / "sep4k" / "seed0.pt"), "--out", str(onnx), *vouch], tmp_path, plugin_path
    )
    assert exp.returncode == 0 and onnx.is_file(), exp.stderr
    ev = tm(["evaluate", "--onnx", str(onnx)], tmp_path, plugin_path, mnist_root=mnist_root)
    assert ev.returncode == 0 and "test accuracy" in ev.stdout, ev.stderr


def test_plugin_recipe_by_name_and_mixed_with_a_step(plugin_path, tmp_path, mnist_root):
    out = tmp_path / "out"
    args = [
        "train",
        "--step",
        "4",
        "--recipe",
        "sep4k-recipe",
        "--seeds",
        "1",
        "--dry-run",
        "--out",
        str(out),
        "--quiet",
    ]
    done = tm(args, tmp_path, plugin_path, mnist_root=mnist_root)
    assert done.returncode == 0, done.stderr
    assert (out / "step4" / "seed1.json").is_file() and (out / "sep4k-plugin" / "seed1.json").is_file()


def test_a_broken_plugin_breaks_only_what_uses_it(plugin_path, broken_plugins, tmp_path, mnist_root):
    done = tm(["models"], tmp_path, plugin_path, broken_plugins)
    assert done.returncode == 2 and "Traceback" not in done.stderr  # it lists the rest, then names the broken one
    assert done.stderr.strip().splitlines()[-1].startswith("tinymnist models: error: plugin model(s) that cannot")
    broken = [x for x in done.stdout.splitlines() if x.startswith("broken")]
    assert len(broken) == 1 and "this plugin is broken on purpose" in broken[0]
    assert "sep4k" in done.stdout  # the good plugin still lists
    # The built-in step4 is not replaced by the plugin that claims its name.
    assert "ignored: plugin model 'step4'" in done.stderr
    assert [x for x in done.stdout.splitlines() if x.startswith("step4 ")][0].split()[1] == "8,952"
    recipe = recipe_file(tmp_path, 'name = "b"\nmodel = "broken"\n')
    used = tm(["train", "--recipe", str(recipe), "--dry-run", "--out", str(tmp_path / "o")], tmp_path, broken_plugins)
    assert used.returncode == 2 and used.stderr.count("\n") == 1 and "broken on purpose" in used.stderr
    fine = tm(
        ["train", "--step", "4", "--seeds", "0", "--dry-run", "--out", str(tmp_path / "o2"), "--quiet"],
        tmp_path,
        broken_plugins,
        mnist_root=mnist_root,
    )
    assert fine.returncode == 0, fine.stderr


USER_MODULE = """
import torch.nn as nn

def raises(**kw):
    raise RuntimeError("builder exploded")

def not_a_module(**kw):
    return 42

def wrong_shape(**kw):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 7))

def big(**kw):
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

not_callable = 3


class Boom(BaseException):  # not an Exception: only a fence for every BaseException names it
    pass


class NoParameters(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10]

    def parameters(self, recurse=True):
        raise Boom("no parameters here")


def no_params(**kw):
    return NoParameters()


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


class ExitsInTraining(Linear):  # sys.exit(0) in a training forward was exit 0 and no output: a silent pass
    def forward(self, x):
        if self.training:
            import sys
            sys.exit(0)
        return super().forward(x)


class TupleInTraining(Linear):
    def forward(self, x):
        out = super().forward(x)
        return (out, out) if self.training else out


class SaveRaises(Linear):
    def state_dict(self, *args, **kwargs):
        raise ValueError("cannot save me")


def exits_in_training(**kw):
    return ExitsInTraining()


def tuple_in_training(**kw):
    return TupleInTraining()


class IntLogits(Linear):
    def forward(self, x):
        return super().forward(x).long()


def int_logits(**kw):
    return IntLogits()


def save_raises(**kw):
    return SaveRaises()


class ExportRaises(Linear):  # torch.export wraps this error in its own, raised from tinymnist's export
    def forward(self, x):
        import torch

        if torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
            raise RuntimeError("no export for me")
        return super().forward(x)


def export_raises(**kw):
    return ExportRaises()
"""


@pytest.mark.parametrize(
    "body, message",
    [
        ('name = "x"\nlrr = 0.1\n', "unknown key 'lrr'"),
        ('name = "x"\nlr = "fast"\n', "recipe field lr is 'fast', not a float"),
        ('name = "x"\nepochs = 2.5\n', "recipe field epochs is 2.5, not a int"),
        ('name = "x"\nbase = "step9"\n', "base 'step9' does not exist"),
        ('name = "x"\nlr = \n', "not valid TOML"),
        ('name = "../x"\n', "name '../x' must be a folder name"),
        ('name = "/abs"\n', "name '/abs' must be a folder name"),
        ('name = "step4"\n', "name 'step4' is a built-in recipe's"),
        ("lr = 0.1\n", 'no name; add a line name = "my-recipe"'),
        ('name = "x"\nepochs = 5\n[expect]\nmin_last_k = 99\nlast_k = 10\n', "expect.last_k=10 is more than its 5"),
        ('name = "x"\nmodel = "usermod:no_params"\n', "its parameters() raised Boom: no parameters here"),
        # The command line given as a model would parse this process's argv again, and again (a RecursionError).
        ('name = "x"\nmodel = "tinymnist.cli:main"\n', "command line was called from inside a tinymnist command"),
        # What training needs of a model, tried before the data is read (each was exit 0, 3 or 7 after it).
        ('name = "x"\nmodel = "usermod:exits_in_training"\n', "cannot train: in training mode it raised SystemExit: 0"),
        ('name = "x"\nmodel = "usermod:tuple_in_training"\n', "in training mode a (4, 1, 28, 28) batch gives tuple"),
        ('name = "x"\nmodel = "usermod:int_logits"\n', "its logits are torch.int64; training needs floating-point"),
        ('name = "x"\n[expect]\nmin_acc = 99\n', "[expect] has unknown key 'min_acc'"),
        ('name = "x"\nseeds = [1, 1]\n', "must be a non-empty list of distinct seeds"),
        ('name = "x"\nmodel = "nosuchmod:build"\n', "module 'nosuchmod' not found"),
        ('name = "x"\nmodel = "usermod:missing"\n', "usermod has no attribute 'missing'"),
        ('name = "x"\nmodel = "usermod:raises"\n', "its builder raised RuntimeError: builder exploded"),
        ('name = "x"\nmodel = "usermod:not_a_module"\n', "returned a int, not a torch.nn.Module"),
        ('name = "x"\nmodel = "usermod:wrong_shape"\n', "gives (2, 7), not (2, 10) logits"),
        ('name = "x"\nmodel = "usermod:not_callable"\n', "int is not callable"),
        ('name = "x"\nmodel = "nosuch"\n', "unknown model 'nosuch'"),
    ],
)
def test_bad_recipe_files_exit_2_with_one_line_and_nothing_written(tmp_path, body, message):
    (tmp_path / "usermod.py").write_text(USER_MODULE)
    recipe = recipe_file(tmp_path, body)
    out = tmp_path / "out"
    done = tm(
        ["train", "--recipe", str(recipe), "--out", str(out), "--data-root", str(tmp_path / "nodata")],
        tmp_path,
        tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and str(recipe) in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert not any(out.rglob("*.json"))


def test_a_recipe_file_that_is_not_a_file(tmp_path):
    recipe = tmp_path / "fifo.toml"
    os.mkfifo(recipe)
    done = tm(["train", "--recipe", str(recipe), "--out", str(tmp_path / "o")], tmp_path)
    assert done.returncode == 2 and "not a regular file" in done.stderr and done.stderr.count("\n") == 1


def test_two_recipes_with_one_name_exit_2(tmp_path):
    a = recipe_file(tmp_path, 'name = "same"\n', "a.toml")
    b = recipe_file(tmp_path, 'name = "same"\nlr = 0.05\n', "b.toml")
    done = tm(["train", "--recipe", str(a), "--recipe", str(b), "--out", str(tmp_path / "o")], tmp_path)
    assert done.returncode == 2 and "have one name, 'same'" in done.stderr and done.stderr.count("\n") == 1


def test_a_model_over_its_budget_is_a_gate_failure_before_any_training(tmp_path):
    (tmp_path / "usermod.py").write_text(USER_MODULE)
    recipe = recipe_file(tmp_path, 'name = "big"\nmodel = "usermod:big"\n[expect]\nmax_params = 5000\n')
    out = tmp_path / "out"
    # No data anywhere: exit 1 (not 2) proves the budget was judged before any data was read.
    done = tm(
        ["train", "--recipe", str(recipe), "--out", str(out), "--data-root", str(tmp_path / "nodata")],
        tmp_path,
        tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert "GATE FAILED: big: model 'usermod:big' has 7,850 parameters, must be fewer than 5,000" in done.stderr
    assert not any(out.rglob("*.json"))


def test_the_wheel_holds_one_package_and_the_script(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    import zipfile

    (wheel,) = tmp_path.glob("tinymnist-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"tinymnist"}, tops
    assert not any(n.startswith(("tests/", "reports/", "benchmarks/", "examples/")) for n in names)
    (eps,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "tinymnist = tinymnist.cli:main" in zipfile.ZipFile(wheel).read(eps).decode()
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools' scratch folder


def test_a_plugin_whose_entry_point_is_not_an_import_path_is_named(tmp_path):
    """An installed package's metadata with an entry point that is not module:object (hand-written metadata,
    as a broken build leaves it): importlib fails inside with "'NoneType' object has no attribute 'group'"."""
    info = tmp_path / "site" / "odd_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: odd-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[tinymnist.models]\nodd = not an import path!\n[tinymnist.recipes]\nodd-recipe = not one either!\n"
    )
    recipe = recipe_file(tmp_path, 'name = "o"\nmodel = "odd"\n')
    for spec in (str(recipe), "odd-recipe"):
        done = tm(["train", "--recipe", spec, "--dry-run", "--out", str(tmp_path / "o")], tmp_path, tmp_path / "site")
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "is not module:object; fix the package's [project.entry-points]" in done.stderr, done.stderr
        assert "NoneType" not in done.stderr
        assert not any((tmp_path / "o").rglob("*.json"))


def test_an_error_raised_in_the_users_code_while_training_is_theirs_not_an_internal_error(tmp_path, mnist_root):
    (tmp_path / "usermod.py").write_text(USER_MODULE)
    recipe = recipe_file(tmp_path, 'name = "x"\nmodel = "usermod:save_raises"\n')
    done = tm(
        ["train", "--recipe", str(recipe), "--seeds", "0", "--dry-run", "--out", str(tmp_path / "o")],
        tmp_path,
        tmp_path,
        mnist_root=mnist_root,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert (
        f"user code at {tmp_path / 'usermod.py'}:" in done.stderr
        and "(state_dict) raised ValueError: cannot save me" in done.stderr
    )


def test_an_error_the_users_model_raises_while_exported_is_theirs(tmp_path, mnist_root):
    (tmp_path / "usermod.py").write_text(USER_MODULE)
    recipe = recipe_file(tmp_path, 'name = "x"\nmodel = "usermod:export_raises"\n')
    argv = ["train", "--recipe", str(recipe), "--seeds", "0", "--dry-run", "--quiet", "--out", str(tmp_path / "o")]
    assert tm(argv, tmp_path, tmp_path, mnist_root=mnist_root).returncode == 0
    weights = tmp_path / "o" / "x" / "seed0.pt"
    argv = [
        "export",
        "--checkpoint",
        str(weights),
        "--out",
        str(tmp_path / "m.onnx"),
        "--model",
        "usermod:export_raises",
    ]
    done = tm(argv, tmp_path, tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr  # was exit 3, torch's message
    assert "(forward) raised RuntimeError: no export for me" in done.stderr and not (tmp_path / "m.onnx").exists()


def test_an_error_raised_in_an_installed_plugin_package_is_the_users(tmp_path, mnist_root):
    """The third independent sweep: an error raised in a plugin installed into site-packages was taken for an
    installed library's and so reported as tinymnist's internal error (exit 3). The plugin's package is the
    user's code wherever it is installed."""
    site = tmp_path / "venv" / "lib" / "site-packages"
    (site / "myplug").mkdir(parents=True)
    (site / "myplug" / "__init__.py").write_text(USER_MODULE)
    info = site / "myplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tinymnist.models]\nsaver = myplug:save_raises\n")
    (info / "RECORD").write_text("myplug/__init__.py,,\nmyplug-0.1.dist-info/METADATA,,\n")  # as pip writes it
    recipe = recipe_file(tmp_path, 'name = "x"\nmodel = "saver"\n')
    argv = ["train", "--recipe", str(recipe), "--seeds", "0", "--dry-run", "--out", str(tmp_path / "o")]
    done = tm(argv, tmp_path, site, mnist_root=mnist_root)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"user code at {site / 'myplug' / '__init__.py'}:" in done.stderr, done.stderr
    assert "(state_dict) raised ValueError: cannot save me" in done.stderr


def test_the_training_probe_moves_no_random_draw_and_spares_models_it_cannot_copy():
    """The review of issue 30's third-sweep fixes: the training-mode probe drew dropout masks from the global
    generator, so Xavier weights (drawn after the builder) started elsewhere than at every earlier commit; and
    a weight-normed model, which trains, was refused because it cannot be deep-copied."""
    import torch
    from torch import nn
    from torch.nn.utils import weight_norm

    from tinymnist.models.registry import check_training, create_model, get_builder

    for name in ("step3", "step4"):  # both have dropout
        torch.manual_seed(0)
        get_builder(name)()
        after_builder = torch.rand(5)
        torch.manual_seed(0)
        create_model(name)
        assert torch.equal(torch.rand(5), after_builder), name
    check_training(nn.Sequential(nn.Flatten(), weight_norm(nn.Linear(784, 10))), "wn")  # no error


def test_what_counts_as_the_users_code_is_neither_a_library_named_by_import_path_nor_tinymnist_via_a_link(
    tmp_path,
):
    """The review of the third sweep's fixes: an import path such as torch.nn:Linear marked all of torch as the
    user's, so a bug of ours inside torch read as theirs (exit 2, no saved traceback); and tinymnist imported
    through a symlinked folder took its own frames for the user's."""
    import torch

    from tinymnist.errors import user_code_at
    from tinymnist.models.registry import get_builder

    get_builder("torch.nn:Linear")
    try:
        torch.nn.functional.cross_entropy(torch.zeros(2, 10), torch.zeros(3, dtype=torch.long))
    except ValueError as e:
        assert user_code_at(e.with_traceback(e.__traceback__.tb_next)) is None  # torch's frames only, not this test's
    link = tmp_path / "linked-src"
    link.symlink_to(REPO / "src", target_is_directory=True)
    probe = (
        "from tinymnist.errors import user_code_at\n"
        "from tinymnist.models import count_params\n"
        "try:\n    count_params(None)\n"
        "except Exception as e:\n    print(user_code_at(e))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(link)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout.strip() == "None", done.stdout + done.stderr


def test_an_error_in_a_users_builder_is_one_line_that_says_where(tmp_path, capsys, monkeypatch):
    """The fourth independent sweep: a builder raising a three-line message printed three lines, and no
    FILE:LINE, where an error raised while training says both in one line."""
    from tinymnist.cli import main

    (tmp_path / "multimod.py").write_text('def multiline(**kw):\n    raise ValueError("first line\\nsecond\\nthird")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["train", "--step", "2", "--seeds", "0", "--dry-run", "--out", str(tmp_path / "o"), "--set"]
    assert main([*argv, "model=multimod:multiline"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"raised ValueError: first line (at {tmp_path / 'multimod.py'}:2 (multiline))" in err, err


def test_a_model_that_goes_wrong_only_at_the_training_batch_size_is_the_users(tmp_path, capsys, monkeypatch):
    """The sixth independent sweep: the probe's batch of 4 passed, and logits without a gradient, or 3-d
    ones, above 4 images were an internal error deep in torch (exit 3). The engine checks each batch's logits."""
    from tinymnist.cli import main

    (tmp_path / "bigbatch.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "class Base(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.f = nn.Linear(784, 10)\n"
        "    def forward(self, x):\n"
        "        return self.f(x.flatten(1))\n"
        "class NoGrad(Base):\n"
        "    def forward(self, x):\n"
        "        if x.shape[0] > 4:\n"
        "            with torch.no_grad():\n"
        "                return super().forward(x)\n"
        "        return super().forward(x)\n"
        "class ThreeD(Base):\n"
        "    def forward(self, x):\n"
        "        y = super().forward(x)\n"
        "        return y.unsqueeze(1) if x.shape[0] > 4 else y\n"
        "def nograd(**kw):\n"
        "    return NoGrad()\n"
        "def threed(**kw):\n"
        "    return ThreeD()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["train", "--step", "2", "--seeds", "0", "--dry-run", "--quiet", "--out", str(tmp_path / "o"), "--set"]
    for fn, said in (
        ("nograd", "its logits do not depend on its parameters"),
        ("threed", "a (128, 1, 28, 28) batch gives (128, 1, 10), not (128, 10) logits"),
    ):
        assert main([*argv, f"model=bigbatch:{fn}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"model 'bigbatch:{fn}'" in err and said in err, err


def _raising_at_training_size(tmp_path, monkeypatch, name: str, imports: list[str], error: str) -> list[str]:
    """A model module ``tmp_path/NAME.py`` whose forward raises ``error`` on a training batch (above 4 images, so
    the probe passes), at line ``len(imports) + 7``; importable here and by local jobs. The train argv for it."""
    lines = [
        *imports,
        "from torch import nn",
        "class M(nn.Module):",
        "    def __init__(self):",
        "        super().__init__()",
        "        self.f = nn.Linear(784, 10)",
        "    def forward(self, x):",
        "        if x.shape[0] > 4:",
        f"            raise {error}",
        "        return self.f(x.flatten(1))",
        f"def {name}(**kw):",
        "    return M()",
    ]
    (tmp_path / f"{name}.py").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # for the local jobs' own processes
    return [
        "train",
        "--step",
        "2",
        "--dry-run",
        "--quiet",
        "--out",
        str(tmp_path / "o"),
        "--set",
        f"model={name}:{name}",
    ]


def test_a_users_huge_error_message_is_cut_and_still_says_where(tmp_path, capsys, monkeypatch):
    """The sixth independent sweep: a model raising a 100,000-character message lost its "user code at
    FILE:LINE" under local jobs (a job's error is read from its log's tail) and was a 100 kB line in-process."""
    from tinymnist.cli import main

    argv = _raising_at_training_size(tmp_path, monkeypatch, "loud", [], "RuntimeError('x' * 100000)")
    for seeds in (["--seeds", "0"], ["--seeds", "0-1", "--executor", "local"]):
        assert main([*argv, *seeds]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'loud.py'}:8" in err and "(100,000 characters)" in err, err[:300]
        assert max(map(len, err.splitlines())) < 2000


def test_a_model_raising_tinymnists_own_errors_is_the_users_on_every_executor(tmp_path, capsys, monkeypatch):
    """The ninth independent sweep: a forward that raised tinymnist's GateFailed read as a gate failure (exit 1)
    in one process and as a dead job (6) under local jobs; a UserError it raised did not say where."""
    from tinymnist.cli import main

    imports = ["import os", "from tinymnist.errors import GateFailed, UserError"]
    error = "{'gate': GateFailed, 'usage': UserError}[os.environ['OWN']]('my own check')"
    argv = _raising_at_training_size(tmp_path, monkeypatch, "own", imports, error)
    for kind in ("gate", "usage"):
        monkeypatch.setenv("OWN", kind)
        for seeds in (["--seeds", "0"], ["--seeds", "0-1", "--executor", "local"]):
            assert main([*argv, *seeds]) == 2, (kind, seeds)
            err = capsys.readouterr().err
            assert f"user code at {tmp_path / 'own.py'}:10" in err and "my own check" in err, err
