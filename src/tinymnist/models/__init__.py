"""Model registry: built-ins (``register_model``), plugins (entry point group ``tinymnist.models``) and import
paths (``package.module:callable``); ``create_model(name)`` is the only way in."""

# Importing the module registers the built-in builders; it builds nothing.
from tinymnist.models import nets  # noqa: F401,E402
from tinymnist.models.registry import (
    ModelError,
    builtin_models,
    count_params,
    create_model,
    list_models,
    register_model,
)

__all__ = ["ModelError", "builtin_models", "create_model", "list_models", "register_model", "count_params"]
