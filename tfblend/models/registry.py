"""Model registry: scripts and configs choose a model class by name.

@register_model("vgg")
class VGGStudent(keras.Model): ...

model = get_model("vgg", num_classes=5126, preset="small")
"""

_REGISTRY: dict[str, type] = {}

#: The registered model names, a live view (models registered later appear in it too).
MODEL_NAMES = _REGISTRY.keys()


def register_model(name):
    """Class decorator: make `cls` available as `get_model(name, ...)`.

    Raises ValueError if `name` is already taken by another class.
    """

    def decorator(cls):
        if _REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_REGISTRY[name]!r}")
        _REGISTRY[name] = cls
        return cls

    return decorator


def get_model_class(name):
    """The class registered under `name`; ValueError naming the known models otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}"
        ) from None


def get_model(name, **kwargs):
    """Instantiate the model registered under `name` with constructor `kwargs`."""
    return get_model_class(name)(**kwargs)
