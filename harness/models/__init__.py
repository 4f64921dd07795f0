"""Models: architectures (registered in MODELS), the zoo of trained models, checkpoints and recipes."""
import importlib

for _module in ("small", "resnet", "preact_resnet", "wide_resnet", "resnet_imagenet", "zoo"):
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as err:  # a module not written yet
        if err.name != f"{__name__}.{_module}":
            raise
