"""New-intent discovery: cluster the utterances a model was unsure about into candidate intents.

    >>> from clustering import Discovery, utterances_from_store, write_report, export_clusters
    >>> result = Discovery(IntentClassifier.load("models/hwu64")).fit(utterances_from_store(registry))
    >>> write_report("report.html", result)       # and report.json beside it
    >>> export_clusters(result, "candidates.csv", clusters=[0, 3])

Built on ``intent_router``: embeddings come from the model's ``embed`` (or a base model).
"""

from .clusterer import SplittingHDBSCAN
from .export import check_export_path, export_clusters, export_text
from .known_intents import COVERAGE_GAP, NEW_INTENT, KnownIntents
from .labelling import KeywordLabeller
from .pipeline import Cluster, Discovery, DiscoveryError, DiscoveryResult
from .report import check_report_path, render_report, report_pages, write_report
from .sources import Utterances, utterances_from_file, utterances_from_store, utterances_from_texts

__all__ = [
    "COVERAGE_GAP",
    "NEW_INTENT",
    "Cluster",
    "Discovery",
    "DiscoveryError",
    "DiscoveryResult",
    "KeywordLabeller",
    "KnownIntents",
    "SplittingHDBSCAN",
    "Utterances",
    "check_export_path",
    "check_report_path",
    "export_clusters",
    "export_text",
    "render_report",
    "report_pages",
    "utterances_from_file",
    "utterances_from_store",
    "utterances_from_texts",
    "write_report",
]
