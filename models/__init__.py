"""Model registry: ``register_model`` decorates a builder, ``create_model(name)`` is the only way in."""
from models.registry import create_model, list_models, register_model, count_params

# Importing the module registers its builders; it builds nothing.
from models import nets  # noqa: F401,E402

__all__ = ["create_model", "list_models", "register_model", "count_params"]
