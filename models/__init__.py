"""Model registry: ``register_model`` decorates a builder, ``create_model(name)`` is the only way in."""

# Importing the module registers its builders; it builds nothing.
from models import nets  # noqa: F401,E402
from models.registry import count_params, create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model", "count_params"]
