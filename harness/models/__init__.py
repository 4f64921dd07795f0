"""Models: architectures (registered in MODELS), the zoo of trained models, checkpoints and recipes."""
from . import preact_resnet, resnet, resnet_imagenet, small, wide_resnet, zoo  # noqa: F401 - register
