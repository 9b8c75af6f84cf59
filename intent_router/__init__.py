"""intent-router: fine-tune a small sentence-embedding intent classifier and route chatbot traffic."""

__version__ = "0.1.0"

from .data import DataError, Dataset, Example, load_dataset, train_validation_split  # noqa: E402
from .model import IntentClassifier, NotFittedError  # noqa: E402
from .model_folder import ModelFolderError  # noqa: E402

__all__ = [
    "DataError",
    "Dataset",
    "Example",
    "IntentClassifier",
    "ModelFolderError",
    "NotFittedError",
    "__version__",
    "load_dataset",
    "train_validation_split",
]
