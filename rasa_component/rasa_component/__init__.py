"""intent-router's classifier as a Rasa 3.x NLU component: ``- name: rasa_component.IntentRouterClassifier``."""

from .classifier import IntentRouterClassifier, IntentRouterError

__all__ = ["IntentRouterClassifier", "IntentRouterError"]
