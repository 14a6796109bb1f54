"""Where models come from, in the order a name is looked up:

1. the built-ins, registered with ``@register_model`` (timm's pattern); no plugin can take one of their names;
2. installed plugins: entry point group ``tinymnist.models``, name -> ``"pkg.mod:builder"``. They are listed by
   name without importing anything, and a plugin's module is imported only when that name is used
   (lm-evaluation-harness's lazy registry), so a broken plugin breaks only the runs that ask for it;
3. an import path ``"pkg.mod:builder"``, anywhere a name is accepted.

A builder is a callable returning an ``nn.Module``; ``create_model`` checks that it does, and that the module
maps a ``(2, 1, 28, 28)`` batch to ``(2, 10)`` logits, so a wrong model is named before any data is read.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata

import torch
import torch.nn as nn

from tinymnist.errors import UserError, mark_plugin_files, said

ENTRY_POINT_GROUP = "tinymnist.models"
INPUT_SHAPE, NUM_CLASSES = (1, 28, 28), 10

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class ModelError(UserError):
    """A model that cannot be found, imported, built or run; the message names it and the fix."""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def builtin_models() -> list[str]:
    return sorted(_REGISTRY)


def plugin_entry_points() -> dict[str, metadata.EntryPoint]:
    """Installed plugin models by name, not loaded. A plugin may not take a built-in's name: it is left out."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _REGISTRY}


def shadowing_plugins() -> list[metadata.EntryPoint]:
    """Plugins that declare a built-in's name (ignored: built-ins cannot be replaced)."""
    return [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name in _REGISTRY]


def list_models(pattern: str = "*") -> list[str]:
    """Built-in names, then plugin names, each sorted; nothing is imported."""
    plugins = sorted(plugin_entry_points())
    return [n for n in [*builtin_models(), *plugins] if fnmatch.fnmatch(n, pattern)]


@contextmanager
def user_code(error: Callable[[str], UserError]) -> Iterator[None]:
    """Run user code (a plugin's import, a builder, a model's methods, a recipe's callable): whatever it raises
    but Ctrl-C and SIGTERM becomes ``error(said(e))``, one line naming the user's code (exit 2), never a
    traceback from inside it and never its exit code. The one place this rule is written."""
    try:
        yield
    except (KeyboardInterrupt, UserError):  # Ctrl-C (and SIGTERM), or already one line that names the fault
        raise
    # Anything else, SystemExit above all: a plugin that calls sys.exit(0) would otherwise end tinymnist with
    # exit 0 and no output, a silent pass (issue 30, cause 3).
    except BaseException as e:
        raise error(said(e, located=True)) from None


def is_import_path(name: str) -> bool:
    return ":" in name


def _import_object(path: str, what: str):
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ModelError(f"{what} {path!r}: write an import path as package.module:callable")
    # The user's module raised while importing: name it, not where inside it broke.
    with user_code(lambda s: ModelError(f"{what} {path!r}: importing {module_name} failed ({s})")):
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            raise ModelError(
                f"{what} {path!r}: module {e.name!r} not found; install it or add its folder to PYTHONPATH"
            ) from None
    for part in attr.split("."):
        # A module's own __getattr__ is user code too.
        with user_code(lambda s: ModelError(f"{what} {path!r}: looking up {attr!r} raised {s}")):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ModelError(f"{what} {path!r}: {module_name} has no attribute {attr!r}") from None
    return obj


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder behind a built-in name, a plugin name or an import path."""
    if not isinstance(name, str) or not name:
        raise ModelError(f"model {name!r}: give a registered name or an import path package.module:callable")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if is_import_path(name):
        builder = _import_object(name, "model")
    else:
        ep = plugin_entry_points().get(name)
        if ep is None:
            raise ModelError(
                f"unknown model {name!r}; registered: {', '.join(list_models())}; or give an import path "
                "package.module:callable"
            )
        # A broken plugin is named in one line, and only here, where it is used.
        builder = load_plugin(
            ep, lambda s: ModelError(f"model {name!r} (plugin {ep.value}, from {_dist(ep)}) cannot be loaded: {s}")
        )
    if not callable(builder):
        raise ModelError(f"model {name!r}: {type(builder).__name__} is not callable; point it at a builder")
    return builder


def load_plugin(ep: metadata.EntryPoint, error: Callable[[str], UserError]):
    """The object an installed plugin's entry point names, its module imported as user code (``user_code``).
    A value that is not ``module:object`` would fail inside importlib with an AttributeError about None."""
    if not ep.pattern.match(ep.value):
        raise error(
            f"its entry point {ep.name} = {ep.value!r} (group {ep.group}) is not module:object; fix the package's "
            "[project.entry-points] and reinstall it"
        )
    with user_code(error):
        obj = ep.load()
    mark_plugin_files(getattr(ep, "dist", None))
    return obj


def _dist(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an installed package"


def create_model(name: str, **kwargs) -> nn.Module:
    """Build model ``name`` with ``kwargs`` and check that it is a module mapping (2, 1, 28, 28) to (2, 10)."""
    builder = get_builder(name)
    with user_code(lambda s: ModelError(f"model {name!r} with model_kwargs {kwargs}: its builder raised {s}")):
        model = builder(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {name!r}: its builder returned a {type(model).__name__}, not a torch.nn.Module")
    check_shape(model, name)
    # A module may override parameters(): every later count and optimizer calls it, so it is tried here, once.
    with user_code(lambda s: ModelError(f"model {name!r}: its parameters() raised {s}")):
        trainable = count_params(model)
    if trainable:  # a model with nothing to train is named by the recipe check, in its own words
        check_training(model, name)
    return model


def check_training(model: nn.Module, name: str) -> None:
    """What training needs of the logits, tried on a copy in training mode with a batch of 4 (not the 2 of
    ``check_shape``): (4, 10), floating point, and depending on the parameters. A model that meets the eval
    check but not these failed minutes later, after the data was read, as an internal error (exit 3) deep in
    torch (the third independent sweep of issue 30: a tuple in training mode, int64 logits, a fixed batch size,
    logits without a gradient)."""
    import copy

    try:
        probe = copy.deepcopy(model).train()
    except Exception:  # noqa: BLE001 - weight_norm and non-leaf tensors cannot be copied; such a model trains
        return  # fine, and is not probed: what it would catch then surfaces in training, named as the user's
    # On a forked generator: dropout in the probe must not move the draws that follow (Xavier weights are drawn
    # after the builder), or every run would start elsewhere than at the commits before this check.
    with (
        torch.random.fork_rng(devices=[]),
        user_code(lambda s: ModelError(f"model {name!r} cannot train: in training mode it raised {s}")),
    ):
        out = probe(torch.zeros(4, *INPUT_SHAPE))
    check_logits(out, 4, name)


def check_logits(out, batch: int, name: str) -> None:
    """What training needs of a batch's logits: (batch, 10), floating point, depending on the parameters. Checked
    on the probe, and by the engine on every training batch (a comparison of a shape: microseconds against a
    batch's milliseconds), so a model that changes at another batch size is named as the user's, not an internal
    error deep in torch (the sixth independent sweep of issue 30: no gradient, or 3-d logits, above 4 images)."""
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (batch, NUM_CLASSES):
        raise ModelError(
            f"model {name!r}: in training mode a ({batch}, 1, 28, 28) batch gives {shape}, not ({batch}, 10) logits"
        )
    if not out.is_floating_point():
        raise ModelError(f"model {name!r}: its logits are {out.dtype}; training needs floating-point logits")
    if not out.requires_grad:
        raise ModelError(f"model {name!r}: its logits do not depend on its parameters (no gradient reaches them)")


def check_shape(model: nn.Module, name: str) -> None:
    """One forward pass of two blank images in eval mode (no statistics touched): logits must be (2, 10)."""

    # e.g. a feature map smaller than a kernel; a torch error's first line is enough.
    def error(s: str) -> ModelError:
        first = s.splitlines()[0] if s else ""
        return ModelError(f"model {name!r} cannot run on a (2, 1, 28, 28) batch ({first[:200]}); check its sizes")

    with user_code(error):
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(torch.zeros(2, *INPUT_SHAPE))
        finally:
            model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, NUM_CLASSES):
        raise ModelError(f"model {name!r}: a (2, 1, 28, 28) batch gives {shape}, not (2, {NUM_CLASSES}) logits")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
