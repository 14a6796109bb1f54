"""A recipe shipped by the plugin: the same table a recipe file holds."""


def recipe() -> dict:
    return {
        "name": "sep4k-plugin",
        "base": "step4",
        "model": "sep4k",
        "model_kwargs": {"width": 12},
        "expect": {"max_params": 5000, "min_last_k": 99.40},
    }
