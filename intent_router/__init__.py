"""intent-router: fine-tune a small sentence-embedding intent classifier and route chatbot traffic.

Names are imported on first use, so a process that only needs the registry or the HTTP client does
not load torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "DataError": ".data",
    "Dataset": ".data",
    "Example": ".data",
    "load_dataset": ".data",
    "train_validation_split": ".data",
    "IntentClassifier": ".model",
    "NotFittedError": ".model",
    "ModelFolderError": ".model_folder",
    "ModelLoadError": ".model_folder",
}
__all__ = [
    "DataError",
    "Dataset",
    "Example",
    "IntentClassifier",
    "ModelFolderError",
    "ModelLoadError",
    "NotFittedError",
    "__version__",
    "load_dataset",
    "train_validation_split",
]

if TYPE_CHECKING:
    from .data import DataError, Dataset, Example, load_dataset, train_validation_split
    from .model import IntentClassifier, NotFittedError
    from .model_folder import ModelFolderError, ModelLoadError


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'intent_router' has no attribute {name!r}")
