"""New-intent discovery (clustering/): real model, real UMAP and HDBSCAN, real SQLite, real files.

The scene: a model fine-tuned on 4 HWU64 intents; a pool of utterances from 2 intents it never saw
(alarm_set, weather_query) plus a few from the known ones. The hidden intents must come back as
clusters of their own.
"""

from __future__ import annotations

import copy
import json
import re
import resource
import signal
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import dataset_file

from clustering import (
    NEW_INTENT,
    Discovery,
    DiscoveryError,
    DiscoveryResult,
    KeywordLabeller,
    export_clusters,
    render_report,
    utterances_from_file,
    utterances_from_store,
    utterances_from_texts,
    write_report,
)
from clustering.frozen import frozen_encoder
from clustering.pipeline import Cluster, neighbours_for
from intent_router import DataError, IntentClassifier, load_dataset
from intent_router.base_models import load_base_model
from intent_router.model import encode
from intent_router.registry import Registry

KNOWN = ["calendar_set", "play_music", "takeaway_order", "transport_ticket"]
HIDDEN = ["alarm_set", "weather_query"]
HOSTILE = ["<script>alert('x')</script>", "</script><script>alert(2)</script> set an alarm", "a & b <b>bold</b>"]


def rows_of(intents: list[str], per_intent: int, skip: int = 0) -> list[tuple[str, str]]:
    data = load_dataset(dataset_file("hwu64/train.csv"))
    rows = []
    for intent in intents:
        texts = [e.text for e in data.examples if e.label == intent]
        rows += [(text, intent) for text in texts[skip : skip + per_intent]]
    return rows


@pytest.fixture(scope="module")
def known_model() -> IntentClassifier:
    train = rows_of(KNOWN, 16)
    from intent_router import Dataset

    return IntentClassifier(steps=6, seed=0).fit(Dataset.from_lists(*zip(*train, strict=True)))


@pytest.fixture(scope="module")
def pool_rows() -> list[tuple[str, str]]:
    """30 utterances of each hidden intent, 6 of each known one the model did not train on."""
    return rows_of(HIDDEN, 30) + rows_of(KNOWN, 6, skip=16)


@pytest.fixture(scope="module")
def result(known_model, pool_rows):
    return Discovery(known_model, seed=0).fit([text for text, _ in pool_rows])


def test_hidden_intents_come_back_as_clusters_of_their_own(result, pool_rows):
    truth = dict(pool_rows)
    for intent in HIDDEN:
        homes = [
            c
            for c in result.clusters
            if c.distinct >= 3 and Counter(truth[result.texts[i]] for i in c.members)[intent] >= 0.6 * c.distinct
        ]
        assert homes, f"{intent} has no cluster of its own: {[(c.name, c.size) for c in result.clusters]}"
        best = max(homes, key=lambda c: c.size)
        assert best.kind == NEW_INTENT, (best.name, best.nearest_intent, best.similarity)
        assert best.nearest_intent in KNOWN and 0 <= best.similarity <= 1
    assert result.noise / result.total < 0.5


def test_unseen_phrasings_of_known_intents_are_coverage_gaps_of_them(known_model):
    rows = rows_of(KNOWN, 25, skip=16)
    truth = dict(rows)
    found = Discovery(known_model, seed=0).fit([text for text, _ in rows])
    assert found.clusters
    for cluster in found.clusters:
        majority, _ = Counter(truth[found.texts[i]] for i in cluster.members).most_common(1)[0]
        assert (cluster.kind, cluster.nearest_intent) == ("coverage_gap", majority), cluster


def test_each_cluster_has_a_name_keywords_examples_and_a_share(result):
    assert len({c.name for c in result.clusters}) == len(result.clusters)
    for cluster in result.clusters:
        assert re.fullmatch(r"[a-z0-9_]+", cluster.name)
        assert cluster.keywords and cluster.representative_examples
        members = {result.texts[i] for i in cluster.members}
        assert set(cluster.representative_examples + cluster.random_examples) <= members
        assert cluster.share == pytest.approx(cluster.size / result.total, abs=1e-4)
    sizes = [c.size for c in result.clusters]
    assert sizes == sorted(sizes, reverse=True)
    document = result.to_dict()
    assert document["noise"]["utterances"] + sum(sizes) == result.total == len(document["points"])


FRENCH = ["mets un réveil à sept heures", "réveil demain à six heures", "active le réveil pour demain",
          "un réveil à huit heures", "règle le réveil à sept heures"]  # fmt: skip
GERMAN = ["ich will nach berlin", "ich will einen zug nach berlin", "will morgen nach berlin fahren",
          "ich will heute nach berlin", "wir wollen nach berlin"]  # fmt: skip
RUSSIAN = ["поставь будильник на семь утра", "будильник на шесть утра", "разбуди меня будильник в семь",
           "включи будильник на утро", "будильник завтра в семь утра"]  # fmt: skip


def test_suggested_names_keep_the_words_of_any_script_and_load_back_as_labels(tmp_path):
    texts = FRENCH + GERMAN + RUSSIAN
    assignments = np.repeat(np.arange(3), 5)
    embeddings = np.random.default_rng(0).normal(size=(len(texts), 8))
    labels = KeywordLabeller(stop_words=None).label(texts, [1] * len(texts), assignments, embeddings)
    names = [labels[i].name for i in range(3)]
    assert names[0].split("_")[0] == "réveil" and "berlin" in names[1].split("_")
    assert names[2].split("_")[0] == "будильник"
    clusters = [Cluster(i, name, 5, 5, 1 / 3, [], [], [], None, None, "unknown", list(range(5 * i, 5 * i + 5)))
                for i, name in enumerate(names)]  # fmt: skip
    found = DiscoveryResult("<memory>", texts, [1] * len(texts), assignments, clusters, None, {}, {})
    assert load_dataset(export_clusters(found, tmp_path / "new.csv")).labels == [n for n in names for _ in range(5)]


CHINESE = ["帮我设置一个闹钟", "明天早上七点的闹钟", "设置闹钟六点半", "把闹钟调到八点", "取消明天的闹钟",
           "播放一些音乐", "我想听音乐", "放周杰伦的音乐", "播放轻音乐", "来点音乐吧"]  # fmt: skip


def test_chinese_names_are_words_not_whole_utterances():
    assignments, embeddings = np.repeat(np.arange(2), 5), np.eye(10)
    labels = KeywordLabeller(stop_words=None).label(CHINESE, [1] * 10, assignments, embeddings)
    assert [label.name.split("_")[0] for label in labels.values()] == ["闹钟", "音乐"]  # alarm, music
    for label in labels.values():  # character pairs and pairs of them, never a whole utterance
        assert all(len(word) <= 2 for keyword in label.keywords for word in keyword.split()), label.keywords


def test_english_stop_words_unless_the_base_model_is_a_multilingual_one(known_model):
    def labeller_of(base_model: str) -> KeywordLabeller:
        model = copy.copy(known_model)
        model.info_ = {**known_model.info_, "base_model": base_model}
        return Discovery(model).labeller

    assert known_model.info_["base_model"] == "english-small"
    assert Discovery(known_model).labeller.stop_words == "english"
    for english in ("sentence-transformers/all-MiniLM-L6-v2", "BAAI/bge-small-en-v1.5", "/models/my-base"):
        assert labeller_of(english).stop_words == "english", english
    multilingual = ("multilingual-small", "intfloat/multilingual-e5-small", "paraphrase-multilingual-MiniLM-L12-v2")
    for other in multilingual:
        assert labeller_of(other).stop_words is None, other
    texts = GERMAN + RUSSIAN  # German "will" (want) is an English stop word
    assignments, embeddings = np.repeat(np.arange(2), 5), np.eye(10)
    german = labeller_of("multilingual-small").label(texts, [1] * 10, assignments, embeddings)[0]
    assert "will" in german.keywords
    assert "will" not in Discovery(known_model).labeller.label(texts, [1] * 10, assignments, embeddings)[0].keywords


def test_the_same_seed_gives_the_same_clusters(known_model, pool_rows, result):
    again = Discovery(known_model, seed=0).fit([text for text, _ in pool_rows])
    assert again.assignments.tolist() == result.assignments.tolist()
    assert [c.name for c in again.clusters] == [c.name for c in result.clusters]


# Texts a clean_text model's cleaning empties: links, emoji, markup. Its frozen encoder embedded them
# all as "", a fake "new intent" whose export a clean_text training then refused.
CLEANED_AWAY = [f"https://example.com/track/{n}" for n in range(8)] + ["😀😀", "👍", "<br/>&nbsp;", "<p></p> 🎉"]


@pytest.fixture(scope="module")
def cleaning_model() -> IntentClassifier:
    from intent_router import Dataset

    train = rows_of(KNOWN, 16)
    return IntentClassifier(steps=0, seed=0, clean_text=True).fit(Dataset.from_lists(*zip(*train, strict=True)))


def test_texts_a_clean_text_models_cleaning_empties_are_skipped_with_a_count(cleaning_model, pool_rows, tmp_path):
    texts = [text for text, _ in pool_rows] + CLEANED_AWAY + CLEANED_AWAY[:2]
    found = Discovery(cleaning_model, seed=0).fit(texts)
    assert not set(CLEANED_AWAY) & set(found.texts)
    assert found.total == len(pool_rows)
    skipped = f"{len(CLEANED_AWAY) + 2} text(s) empty once cleaned as the model cleans (only markup, links or symbols)"
    assert found.warnings == [f"<memory>: warning: {skipped} skipped"]
    assert found.to_dict()["warnings"] == found.warnings
    assert f"<p>&lt;memory&gt;: warning: {skipped} skipped</p>" in render_report(found)
    exported = load_dataset(export_clusters(found, tmp_path / "new.csv"))
    assert len(exported.cleaned(cleaning_model.cleaning_version_)) == len(exported)  # a clean_text training reads it
    with pytest.raises(DiscoveryError, match="has 0 distinct utterance"):
        Discovery(cleaning_model).fit(CLEANED_AWAY)


def test_duplicates_collapse_with_a_count():
    pool = utterances_from_texts(["wake me at 7", " wake me at 7 ", "", "rain today?", "wake me at 7"])
    assert pool.texts == ["wake me at 7", "rain today?"]
    assert pool.counts == [3, 1] and pool.total == 4


@pytest.mark.parametrize("texts", [[], ["set an alarm"], ["set an alarm"] * 40])
def test_an_empty_or_one_utterance_pool_gives_a_clear_message(known_model, texts):
    with pytest.raises(DiscoveryError, match=r"has [01] distinct utterance\(s\); discovery needs at least 10"):
        Discovery(known_model).fit(texts)


def test_the_smallest_cluster_is_one_percent_of_the_pool_between_5_and_10_unless_given(known_model, result):
    automatic = Discovery(known_model)
    assert [automatic.cluster_size(n) for n in (10, 499, 650, 1_000, 10_000)] == [5, 5, 6, 10, 10]
    assert Discovery(known_model, min_cluster_size=3).cluster_size(10_000) == 3
    assert [neighbours_for(size) for size in (3, 5, 6, 10, 40)] == [15, 15, 18, 30, 50]
    assert result.settings["clusterer"] == "SplittingHDBSCAN(min_cluster_size=5, split_share=0.25)"
    assert result.settings["reducer"] == "UMAP(5 dims, cosine, 15 neighbours)"
    with pytest.raises(DiscoveryError, match="needs at least 24 .*minimum cluster size of 12"):
        Discovery(known_model, min_cluster_size=12).fit([f"utterance number {i}" for i in range(20)])


def test_the_report_escapes_hostile_text(known_model, pool_rows, tmp_path):
    texts = [text for text, _ in pool_rows] + HOSTILE
    found = Discovery(known_model, seed=0).fit(texts)
    page = write_report(tmp_path / "report.html", found).read_text(encoding="utf-8")
    assert page.count("<script") == 2 and page.count("</script>") == 2  # only the page's own two
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    embedded = re.search(r'<script type="application/json" id="discovery-data">(.*?)</script>', page, re.S)
    data = json.loads(embedded.group(1))
    assert set(HOSTILE) <= {p["text"] for p in data["points"]}
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8")) == data
    assert "http://" not in page and "https://" not in page  # nothing fetched: opens offline
    assert page.count("<circle") == len(found.texts)


def test_the_report_holds_no_raw_control_characters(result, tmp_path):
    texts = [*result.texts, "ring\x07 the bell\x00 now"]
    hostile = DiscoveryResult(
        result.source, texts, [*result.counts, 1], np.append(result.assignments, -1), result.clusters,
        None, result.settings, result.seconds,
    )  # fmt: skip
    page = write_report(tmp_path / "report.html", hostile).read_text(encoding="utf-8")
    assert "\x00" not in page and "\x07" not in page
    assert "ring the bell now" in page
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert data["points"][-1]["text"] == "ring\x07 the bell\x00 now"  # the JSON keeps the text as it was


def test_the_reports_embedded_data_is_its_json_also_for_del_and_c1_characters(tmp_path):
    texts = ["ring\x85 the\x9b bell\x7f", "wake <me> up\x00"]
    page = write_report(tmp_path / "report.html", one_cluster(texts)).read_text(encoding="utf-8")
    assert not re.search("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]", page)
    assert "ring the bell" in page and "wake &lt;me&gt; up" in page
    embedded = re.search(r'<script type="application/json" id="discovery-data">(.*?)</script>', page, re.S)
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert json.loads(embedded.group(1)) == data
    assert [point["text"] for point in data["points"]] == texts


def test_a_report_that_cannot_be_written_whole_leaves_the_earlier_report_and_json_as_they_were(result, tmp_path):
    write_report(tmp_path / "report.html", result, "Monday")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    tuesday = replace(result, source="Tuesday's traffic")
    page = render_report(tuesday).encode()
    data = json.dumps(tuesday.to_dict(), indent=1, ensure_ascii=False).encode()
    assert b"Tuesday" in data
    assert len(data) < len(page)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file over the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(data) + 100, limit[1]))  # the JSON fits, the page does not
    try:
        with pytest.raises(OSError, match="File too large"):
            write_report(tmp_path / "report.html", tuesday)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no new JSON, no temp file
    assert b"Monday" in before["report.html"]


def test_a_report_named_json_is_refused_before_it_overwrites_its_own_json(result, tmp_path):
    with pytest.raises(ValueError, match="report.json: the report's JSON is written beside it"):
        write_report(tmp_path / "report.json", result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("folder", ["report.html", "report.json"])
def test_a_report_or_its_json_onto_a_folder_is_refused_before_either_is_written(result, tmp_path, folder):
    (tmp_path / folder).mkdir()
    with pytest.raises(ValueError, match=f"{tmp_path / folder} is a folder: name the report's file"):
        write_report(tmp_path / "report.html", result)
    assert [p.name for p in tmp_path.iterdir()] == [folder]
    assert list((tmp_path / folder).iterdir()) == []


def test_utterances_are_read_from_csv_jsonl_and_rasa_files(tmp_path):
    (tmp_path / "one.csv").write_text("text\nwake me up\nwake me up\nwill it rain\n", encoding="utf-8")
    (tmp_path / "two.csv").write_text("text,intent\nwake me up,alarm\nwill it rain,weather\n", encoding="utf-8")
    (tmp_path / "pool.jsonl").write_text('{"text": "wake me up"}\n{"text": "will it rain"}\n', encoding="utf-8")
    (tmp_path / "nlu.yml").write_text(
        "nlu:\n- intent: alarm\n  examples: |\n    - wake me up\n    - wake me at [7am](time)\n", encoding="utf-8"
    )
    assert utterances_from_file(tmp_path / "one.csv").counts == [2, 1]
    assert utterances_from_file(tmp_path / "two.csv").texts == ["wake me up", "will it rain"]
    assert utterances_from_file(tmp_path / "pool.jsonl").texts == ["wake me up", "will it rain"]
    assert utterances_from_file(tmp_path / "nlu.yml").texts == ["wake me up", "wake me at 7am"]
    (tmp_path / "latin1.csv").write_bytes("text\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.csv:2: error: bytes that are not UTF-8"):
        utterances_from_file(tmp_path / "latin1.csv")


def test_a_one_column_csv_keeps_commas_in_its_utterances(tmp_path):
    path = tmp_path / "comma.csv"
    path.write_text("text\nhi, can you set an alarm\nplay some jazz\nok, turn it off, now\n", encoding="utf-8")
    assert utterances_from_file(path).texts == ["hi, can you set an alarm", "play some jazz", "ok, turn it off, now"]
    tabs = tmp_path / "tabs.tsv"
    tabs.write_text("text\nwake me\tup\n", encoding="utf-8")
    assert utterances_from_file(tabs).texts == ["wake me\tup"]


def test_empty_texts_in_a_source_file_are_skipped_with_a_count(tmp_path):
    (tmp_path / "pool.jsonl").write_text('{"text": ""}\n{"text": "wake me up"}\n{"text": "  "}\n', encoding="utf-8")
    (tmp_path / "pool.csv").write_text('text,intent\n"",x\nwake me up,alarm\n', encoding="utf-8")
    jsonl = utterances_from_file(tmp_path / "pool.jsonl")
    assert jsonl.texts == ["wake me up"]
    assert [str(w) for w in jsonl.warnings] == [
        f"{tmp_path / 'pool.jsonl'}: warning: 2 empty text(s) skipped (lines 1, 3)"
    ]
    assert utterances_from_file(tmp_path / "pool.csv").texts == ["wake me up"]
    with pytest.raises(DataError, match="pool.csv:2: error: empty text"):  # training data: still an error
        load_dataset(tmp_path / "pool.csv")


def test_a_string_or_a_non_string_utterance_is_a_clear_type_error(known_model):
    with pytest.raises(TypeError, match=r"got one string \('set an alarm'\); give a list of utterances"):
        Discovery(known_model).fit("set an alarm")
    for bad, name in [(None, "NoneType None"), (5, "int 5")]:
        with pytest.raises(TypeError, match=f"utterance 1 is {name}; every utterance is a string"):
            Discovery(known_model).fit(["set an alarm", bad])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_cluster_size": 1}, r"min_cluster_size \(--min-cluster-size\) is 1; give 2 to 1000"),
        ({"min_cluster_size": -3}, "is -3; give 2 to 1000"),
        ({"seed": -1}, r"seed \(--seed\) is -1; give a whole number from 0 to 4294967295"),
        ({"seed": 2**33}, "is 8589934592; give a whole number"),
    ],
)
def test_a_bad_cluster_size_or_seed_is_refused_at_once(known_model, options, message):
    with pytest.raises(ValueError, match=message):
        Discovery(known_model, **options)


@pytest.mark.parametrize("suffix", ["csv", "yml"])
def test_exported_clusters_load_back_as_training_data(result, tmp_path, suffix):
    chosen = [c.id for c in result.clusters[:2]]
    path = export_clusters(result, tmp_path / f"new.{suffix}", clusters=chosen, names={chosen[0]: "wake_up"})
    data = load_dataset(path)
    assert set(data.labels) == {"wake_up", result.clusters[1].name}
    assert len(data) == sum(result.cluster(i).distinct for i in chosen)
    assert Counter(data.labels)["wake_up"] == result.clusters[0].distinct


def test_exporting_an_unknown_cluster_names_the_clusters_there_are(result, tmp_path):
    last = max(c.id for c in result.clusters)
    with pytest.raises(ValueError, match=f"no cluster 99: the clusters are 0 to {last}"):
        export_clusters(result, tmp_path / "new.csv", clusters=[0, 99])
    assert not (tmp_path / "new.csv").exists()


def test_clusters_to_export_may_come_from_a_generator_and_twice_is_once(result, tmp_path):
    path = export_clusters(result, tmp_path / "new.csv", clusters=(i for i in [0]))
    assert len(load_dataset(path)) == result.clusters[0].distinct
    twice = export_clusters(result, tmp_path / "twice.csv", clusters=[0, 0])
    assert len(load_dataset(twice, deduplicate=False)) == result.clusters[0].distinct
    with pytest.raises(ValueError, match="no clusters chosen: give at least one cluster id"):
        export_clusters(result, tmp_path / "none.csv", clusters=[])


def test_the_rasa_export_quotes_intent_names_and_warns_of_entity_markup(result, tmp_path):
    names = ["a: b", "-", "[x]", "x #y"]
    texts = ["fly to [paris](city)", "ring\x07 the\x00 bell", "plain one", "plain two"]
    assignments = np.arange(len(texts))
    clusters = [
        replace(result.clusters[0], id=i, name=name, members=[i], size=1, distinct=1) for i, name in enumerate(names)
    ]
    odd = DiscoveryResult("<memory>", texts, [1] * 4, assignments, clusters, None, {}, {})
    with pytest.warns(UserWarning) as caught:
        path = export_clusters(odd, tmp_path / "odd.yml")
    assert [str(w.message).split(": ", 1)[1] for w in caught] == [
        "intent 'a: b': 'fly to [paris](city)': Rasa reads [text](name) as an entity",
        "intent '-': 'ring\\x07 the\\x00 bell': line breaks or control characters became spaces",
    ]
    data = load_dataset(path)
    assert data.labels == names
    assert data.texts[1] == "ring  the  bell"  # each control character became a space


def one_cluster(texts: list[str], name: str = "ring_bell") -> DiscoveryResult:
    """A run (no model) whose one cluster holds every text, to export."""
    cluster = Cluster(0, name, len(texts), len(texts), 1.0, [], [], [], None, None, "unknown", list(range(len(texts))))
    return DiscoveryResult("<memory>", texts, [1] * len(texts), np.zeros(len(texts), int), [cluster], None, {}, {})


@pytest.mark.parametrize("suffix", ["csv", "tsv"])
def test_the_csv_and_tsv_exports_turn_control_characters_into_spaces_with_a_warning(tmp_path, suffix):
    """A JSONL pool's \\u0000 or \\u001b escapes reach the export: raw, a NUL stopped the training that
    read it ("perhaps UTF-16") and an ESC became training text."""
    source = tmp_path / "pool.jsonl"
    escapes = ["ring\\u0000 the bell", "red\\u001b[31m alert", "c1 \\u009b here", "plain"]
    source.write_text("".join(f'{{"text": "{text}"}}\n' for text in escapes), encoding="utf-8")
    pool = utterances_from_file(source)
    assert pool.texts[0] == "ring\x00 the bell"
    with pytest.warns(UserWarning) as caught:
        path = export_clusters(one_cluster(pool.texts), tmp_path / f"new.{suffix}")
    assert [str(w.message).split(": ", 1)[1] for w in caught] == [
        f"intent 'ring_bell': {text!r}: line breaks or control characters became spaces" for text in pool.texts[:3]
    ]
    data = load_dataset(path)  # as intent-router train reads it
    assert data.texts == ["ring  the bell", "red [31m alert", "c1   here", "plain"]
    assert set(data.labels) == {"ring_bell"}


@pytest.mark.parametrize("suffix", ["csv", "yml"])
def test_an_export_leaves_out_a_text_left_empty_or_made_the_same_as_another(tmp_path, suffix):
    """Every row of the export reads back: a text of control characters only would be an empty row, and
    two texts made the same would be one text twice (with two labels, refused)."""
    texts = ["\x07", "book a\x1bflight", "book a flight", "plain"]
    with pytest.warns(UserWarning) as caught:
        path = export_clusters(one_cluster(texts), tmp_path / f"new.{suffix}")
    messages = [str(w.message).split(": ", 1)[1] for w in caught]
    assert messages[0] == "intent 'ring_bell': '\\x07': only line breaks or control characters: left out"
    assert messages[-1] == (
        "intent 'ring_bell': 'book a flight': the same as another text once on one line (intent 'ring_bell'): left out"
    )
    assert load_dataset(path).texts == ["book a flight", "plain"]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("c++", "holds '\\+', which joins the labels of a multi-intent row: it would read back as 'c'; rename"),
        ("alarm+remove", "holds '\\+', .* would read back as 'alarm' and 'remove'"),
        ("  ", "is empty: a label needs a visible character"),
        ("\u200b", "is empty"),
        ("ring\x00bell", "holds a control character"),
        ("bell\ud800", "is not valid Unicode"),
        (7, "is int, not a string"),
    ],
)
def test_a_name_to_export_that_would_not_read_back_as_one_label_is_refused(tmp_path, name, why):
    with pytest.raises(ValueError, match=rf"^names\[0\] {re.escape(repr(name))} {why}"):
        export_clusters(one_cluster(["wake me up", "set an alarm"]), tmp_path / "new.csv", names={0: name})
    assert not (tmp_path / "new.csv").exists()


def test_the_store_is_read_whole_or_by_model_router_and_time(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'store.db'}")
    for text, model, router in [("a", "m1", "r1"), ("b", "m1", "r2"), ("a", "m2", "r1"), ("c", "m1", "r1")]:
        registry.record_low_confidence(text, model, router, [("x", 0.3)], "low_confidence")
    first = registry.list_low_confidence(limit=10)[-1].created_at
    assert utterances_from_store(registry).counts == [2, 1, 1]
    assert utterances_from_store(registry, model="m1").texts == ["a", "b", "c"]
    assert utterances_from_store(registry, model="m1", router="r1").texts == ["a", "c"]
    assert utterances_from_store(registry, until=first).total == 0
    assert utterances_from_store(registry, since=first).total == 4
    registry.close()


def test_clusters_are_found_in_the_frozen_base_space_unless_the_tuned_one_is_asked_for(result, known_model, pool_rows):
    assert result.settings["encoder"] == "english-small (frozen)"
    tuned = Discovery(known_model, encoder=known_model.embed, map_2d=False).fit([text for text, _ in pool_rows])
    assert tuned.settings["encoder"] == "model"
    for found in (result, tuned):  # centres are matched in the model's space either way
        new = [c for c in found.clusters if c.kind == NEW_INTENT]
        assert new and all(c.nearest_intent in KNOWN for c in found.clusters)


def test_another_encoder_and_reducer_can_be_swapped_in(known_model, pool_rows):
    from sklearn.decomposition import PCA

    found = Discovery(known_model, encoder=known_model.embed, reducer=PCA(10, random_state=0), map_2d=False).fit(
        [text for text, _ in pool_rows]
    )
    assert found.settings["encoder"] == "model" and found.map_2d is None
    assert found.clusters and all(c.kind in ("new_intent", "coverage_gap") for c in found.clusters)
    assert np.isin(found.assignments, [-1, *range(len(found.clusters))]).all()


# -- the command line and the service ------------------------------------------------------------


@pytest.fixture(scope="module")
def known_model_dir(known_model, tmp_path_factory) -> Path:
    return known_model.save(tmp_path_factory.mktemp("discovery-models") / "hwu-4")


@pytest.fixture(scope="module")
def pool_csv(pool_rows, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "fallbacks.csv"
    path.write_text("text\n" + "".join(f'"{text}"\n' for text, _ in pool_rows), encoding="utf-8")
    return path


def test_cli_discover_writes_the_report_and_exports_chosen_clusters(known_model_dir, pool_csv, tmp_path):
    from test_cli import run

    out = tmp_path / "report.html"
    done = run("discover", "--model", known_model_dir, "--source", pool_csv, "--out", out,
               "--export", tmp_path / "new.yml", "--clusters", "0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr  # transformers' own bar for the base model: hidden, as in train
    report = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    first = report["clusters"][0]
    assert first["name"] in done.stdout
    exported = load_dataset(tmp_path / "new.yml")
    assert set(exported.labels) == {first["name"]} and len(exported) == first["distinct"]


def test_cli_discover_on_an_empty_store_says_so_in_one_line(known_model_dir, tmp_path):
    from test_cli import run

    Registry(f"sqlite:///{tmp_path / 'empty.db'}").close()
    done = run("discover", "--model", known_model_dir, "--database-url", f"sqlite:///{tmp_path / 'empty.db'}")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "low-confidence store (model=hwu-4) has 0 distinct utterance(s)" in done.stderr
    unknown = run("discover", "--model", "no-such-model", "--models-dir", tmp_path)
    assert unknown.returncode == 1 and "no-such-model" in unknown.stderr
    encoder = run("discover", "--model", known_model_dir, "--encoder", "tuned")
    assert encoder.returncode == 1 and "--encoder 'tuned': choose 'base' or 'model'" in encoder.stderr


def test_cli_discover_of_the_model_folder_it_runs_in_reads_that_models_rows_of_the_store(
    known_model_dir, pool_rows, tmp_path
):
    from test_cli import run

    with Registry(f"sqlite:///{tmp_path / 'router.db'}") as registry:
        for text, _ in pool_rows:
            registry.record_low_confidence(text, "hwu-4", "assistant", [("alarm_set", 0.3)], "low_confidence")
        registry.record_low_confidence("a row of another model", "atis", None, [("flight", 0.2)], "low_confidence")
    done = run("discover", "--model", ".", "--database-url", f"sqlite:///{tmp_path / 'router.db'}",
               "--out", tmp_path / "report.html", cwd=known_model_dir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["utterances"] == len(pool_rows)  # the rows of hwu-4, the folder's name; not of '.', nor of atis
    assert "New-intent discovery: hwu-4" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_cli_discover_leaves_out_the_rows_past_the_store_s_retention_as_the_service_does(
    known_model_dir, pool_rows, tmp_path
):
    """The service deletes rows past its retention when it next prunes; discovery must not read them first."""
    import sqlite3

    from test_cli import run

    database = tmp_path / "router.db"
    with Registry(f"sqlite:///{database}") as registry:
        for text, _ in pool_rows[:45]:
            registry.record_low_confidence(text, "hwu-4", "assistant", [("alarm_set", 0.3)], "low_confidence")
    with sqlite3.connect(database) as connection:  # the first 5 rows are 60 days old
        connection.execute("UPDATE low_confidence SET created_at = datetime('now', '-60 days') WHERE id <= 5")
    done = run("discover", "--model", known_model_dir, "--database-url", f"sqlite:///{database}",
               "--out", tmp_path / "report.html", env={"INTENT_ROUTER_LOW_CONFIDENCE_MAX_AGE_DAYS": "30"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["utterances"] == 40
    assert "5 stored utterance(s) past the store's retention skipped" in " ".join(done.stderr.split())
    with Registry(f"sqlite:///{database}") as registry:
        assert len(registry.low_confidence_texts()) == 45  # read past, never deleted: the service's to do


def test_cli_discover_of_a_symlinked_model_folder_reads_the_rows_of_the_name_it_is_served_under(
    known_model_dir, pool_rows, tmp_path
):
    from test_cli import run

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "live").symlink_to(known_model_dir)  # models/live -> .../hwu-4, a release
    with Registry(f"sqlite:///{tmp_path / 'router.db'}") as registry:
        for text, _ in pool_rows[:40]:
            registry.record_low_confidence(text, "live", "assistant", [("alarm_set", 0.3)], "low_confidence")
        registry.record_low_confidence("a row of the release's own name", "hwu-4", None, [("x", 0.2)], "low_confidence")
    done = run("discover", "--model", "live", "--models-dir", tmp_path / "models", "--database-url",
               f"sqlite:///{tmp_path / 'router.db'}", "--out", tmp_path / "report.html")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["utterances"] == 40
    assert "New-intent discovery: live" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_cli_discover_checks_its_options_before_the_run(known_model_dir, pool_csv, tmp_path):
    """A bad --export or --clusters stops the command at once, in one line, with no report written."""
    from test_cli import run

    out = tmp_path / "report.html"
    for options, message in [
        (["--export", tmp_path / "new.txt"], "export to a .csv, .tsv or .yml file"),
        (["--export", tmp_path / "new.csv", "--clusters", "0,x"], "give cluster ids separated by commas"),
        (["--clusters", "0"], "pass --export too"),
        (["--export", tmp_path / "no-such-folder" / "new.csv"], "does not exist; create it first"),
        (["--export", pool_csv], "is the input file"),
        (["--export", tmp_path / "new.csv", "--clusters", ""], "--clusters '': give cluster ids separated by commas"),
        (["--out", tmp_path / "r.json"], "r.json: the report's JSON is written beside it as <name>.json"),
        (["--out", ""], "--out . is a folder: give the name of a file to write"),
        (["--since", "2026-05-01"], f"--since only narrows --source store, and {pool_csv} is a file, read whole"),
        (["--router", "bot", "--all-models"], "--router, --all-models only narrow --source store"),
        (["--out", "/"], "--out / is a folder: give the name of a file to write"),
        (["--out", tmp_path / "same.csv", "--export", tmp_path / "same.csv"], "is also --export"),
        (["--out", "/proc/r.html"], "--out /proc/r.html: cannot write in /proc"),
        (["--seed", "-1"], "seed (--seed) is -1; give a whole number from 0 to 4294967295"),
        (["--seed", "8589934592"], "seed (--seed) is 8589934592"),
        (["--min-cluster-size", "1"], "min_cluster_size (--min-cluster-size) is 1; give 2 to 1000"),
        (["--min-cluster-size", "-3"], "min_cluster_size (--min-cluster-size) is -3"),
        (["--since", "2026-05-08", "--until", "2026-05-01"], "--since 2026-05-08 is not before --until 2026-05-01"),
    ]:
        done = run("discover", "--model", known_model_dir, "--source", pool_csv, "--out", out, *options)
        assert done.returncode == 1, options
        assert done.stderr.startswith("error: ") and done.stderr.strip().count("\n") == 0, done.stderr
        assert message in done.stderr
    assert not out.exists()
    assert not list(Path("/proc").glob(".r.json.*"))


@pytest.mark.parametrize(
    ("option", "value"), [("--since", "9999-12-31T23:00:00-14:00"), ("--until", "0001-01-01T00:00:00+01:00")]
)
def test_cli_discover_refuses_a_time_that_leaves_the_calendar_once_in_utc(known_model_dir, tmp_path, option, value):
    from test_cli import assert_one_line_error, run

    Registry(f"sqlite:///{tmp_path / 'store.db'}").close()
    done = run("discover", "--model", known_model_dir, "--database-url", f"sqlite:///{tmp_path / 'store.db'}",
               option, value, "--out", tmp_path / "r.html")  # fmt: skip
    assert_one_line_error(done, f"{option} {value} is outside years 1 to 9999 once in UTC; give a time within them")


def test_cli_discover_refuses_a_router_name_that_is_not_valid_unicode(known_model_dir, tmp_path):
    from test_cli import assert_one_line_error, run

    Registry(f"sqlite:///{tmp_path / 'store.db'}").close()
    # "\udcff": how Python passes on the byte 0xff, which is not UTF-8, in a command-line argument
    done = run("discover", "--model", known_model_dir, "--database-url", f"sqlite:///{tmp_path / 'store.db'}",
               "--router", "bot\udcff", "--out", tmp_path / "r.html")  # fmt: skip
    assert_one_line_error(done, "--router is not valid Unicode: character 3 is a lone surrogate (U+DCFF)")


def test_cli_discover_never_writes_its_report_onto_the_source(known_model_dir, pool_rows, tmp_path):
    from test_cli import assert_one_line_error, run

    source = tmp_path / "traffic.json"
    source.write_text("".join(json.dumps({"text": text}) + "\n" for text, _ in pool_rows), encoding="utf-8")
    before = source.read_bytes()
    done = run("discover", "--model", known_model_dir, "--source", source, "--format", "jsonl",
               "--out", tmp_path / "traffic.html")  # fmt: skip
    assert_one_line_error(done, f"--out's JSON {source} is the input file {source}: write to another file")
    assert source.read_bytes() == before and not (tmp_path / "traffic.html").exists()


def test_cli_discover_never_writes_its_report_onto_the_store_database(known_model_dir, tmp_path):
    from test_cli import assert_one_line_error, run

    database = tmp_path / "router.db"
    Registry(f"sqlite:///{database}").close()
    before = database.read_bytes()
    done = run("discover", "--model", known_model_dir, "--database-url", f"sqlite:///{database}", "--out", database)
    assert_one_line_error(done, f"--out {database} is the input file {database}: write to another file")
    assert database.read_bytes() == before and not (tmp_path / "router.json").exists()


def test_cli_discover_prints_user_text_that_looks_like_markup_as_it_is(known_model_dir, tmp_path):
    from test_cli import assert_one_line_error, run

    folder = tmp_path / "rep[/red]"
    folder.mkdir(parents=True)  # rep[ holding red]
    (folder / "p9.csv").write_text("text\nwake me up\nwill it rain\n", encoding="utf-8")
    done = run("discover", "--model", known_model_dir, "--source", folder / "p9.csv", "--out", tmp_path / "r.html")
    assert_one_line_error(done, f"{folder / 'p9.csv'} has 2 distinct utterance(s); discovery needs at least 10")


def test_cli_discover_refuses_a_store_database_that_does_not_exist(known_model_dir, tmp_path):
    from test_cli import assert_one_line_error, run

    missing = tmp_path / "nowhere.db"
    done = run("discover", "--model", known_model_dir, "--database-url", f"sqlite:///{missing}")
    assert_one_line_error(done, f"no database at {missing}: --database-url (or INTENT_ROUTER_DATABASE_URL) names")
    assert not missing.exists()


def test_cli_discover_warns_of_empty_texts_it_skips(known_model_dir, tmp_path):
    from test_cli import run

    source = tmp_path / "pool.jsonl"
    source.write_text('{"text": ""}\n{"text": "wake me up"}\n', encoding="utf-8")
    done = run("discover", "--model", known_model_dir, "--source", source, "--out", tmp_path / "r.html")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{source}: warning: 1 empty text(s) skipped (lines 1)",
        f"error: {source} has 1 distinct utterance(s); discovery needs at least 10 (twice the minimum cluster size "
        "of 5)",
    ]


def test_cli_discover_warns_of_texts_a_clean_text_models_cleaning_empties(cleaning_model, tmp_path):
    from test_cli import run

    source = tmp_path / "pool.csv"
    source.write_text("text\n" + "\n".join(["wake me up", "will it rain", *CLEANED_AWAY]) + "\n", encoding="utf-8")
    done = run("discover", "--model", cleaning_model.save(tmp_path / "cleaning"), "--source", source,
               "--out", tmp_path / "r.html")  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{source}: warning: {len(CLEANED_AWAY)} text(s) empty once cleaned as the model cleans (only markup, links "
        "or symbols) skipped",
        f"error: {source} has 2 distinct utterance(s); discovery needs at least 10 (twice the minimum cluster size "
        "of 5)",
    ]


def test_cli_discover_of_an_unknown_cluster_id_keeps_the_report_and_names_the_clusters(
    known_model_dir, pool_csv, tmp_path
):
    from test_cli import run

    out = tmp_path / "report.html"
    done = run("discover", "--model", known_model_dir, "--source", pool_csv, "--out", out,
               "--export", tmp_path / "new.csv", "--clusters", "99")  # fmt: skip
    assert done.returncode == 1
    last = len(json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))["clusters"]) - 1
    assert done.stderr.splitlines()[-1] == f"error: no cluster 99: the clusters are 0 to {last}"
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "new.csv").exists()


def service_home(home: Path, known_model_dir: Path, pool_rows) -> dict:
    """A service folder with the model ``hwu-4`` and the pool in its store; an admin key's header."""
    import shutil

    from test_service import cli

    shutil.copytree(known_model_dir, home / "models" / "hwu-4")
    registry = Registry(f"sqlite:///{home / 'router.db'}")
    for text, _ in pool_rows:
        registry.record_low_confidence(text, "hwu-4", "assistant", [("play_music", 0.4)], "low_confidence")
    registry.close()
    return {"Authorization": f"Bearer {cli(home, 'keys', 'create', '--scope', 'admin')}"}


def test_post_discover_clusters_the_store_off_the_event_loop_and_stores_the_report(
    known_model_dir, pool_rows, tmp_path_factory
):
    import shutil
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from test_service import Server, cli

    home = tmp_path_factory.mktemp("discovery-service")
    admin = service_home(home, known_model_dir, pool_rows)
    bot = {"Authorization": f"Bearer {cli(home, 'keys', 'create', '--scope', 'inference')}"}
    server = Server(home, "--no-finetune-worker")
    try:
        with httpx.Client(base_url=server.url, timeout=300) as http:
            assert http.post("/v1/discover", json={"model": "hwu-4"}, headers=bot).status_code == 403
            with ThreadPoolExecutor(1) as pool:
                running = pool.submit(http.post, "/v1/discover", json={"model": "hwu-4"}, headers=admin)
                slowest = 0.0
                while not running.done():
                    started = time.perf_counter()
                    assert http.get("/healthz").status_code == 200
                    slowest = max(slowest, time.perf_counter() - started)
                    time.sleep(0.2)
                answer = running.result()
            assert answer.status_code == 200, answer.text
            assert slowest < 2.0, f"the event loop was blocked for {slowest:.1f} s"
            body = answer.json()
            assert body["utterances"] == len(pool_rows) and body["clusters"]
            assert isinstance(body["noise"]["utterances"], int)
            assert {"name", "kind", "nearest_intent", "similarity", "keywords"} <= set(body["clusters"][0])
            report = Path(body["report"])
            assert report.parent == home / "discovery-reports" and report.is_file()
            assert report.with_suffix(".json").is_file()

            empty = http.post("/v1/discover", json={"model": "hwu-4", "router": "nobody"}, headers=admin)
            assert empty.status_code == 422 and "0 distinct utterance(s)" in empty.json()["detail"]
            for seed in (-1, 2**33):
                refused = http.post("/v1/discover", json={"model": "hwu-4", "seed": seed}, headers=admin)
                assert refused.status_code == 422 and "seed" in refused.text
            window = {"model": "hwu-4", "since": "2026-05-08", "until": "2026-05-01"}
            backwards = http.post("/v1/discover", json=window, headers=admin)
            assert backwards.status_code == 422 and "is not before until" in backwards.text
            moved = home / "models" / "hwu-moved"  # a folder copied by hand whose base model is gone
            shutil.copytree(home / "models" / "hwu-4", moved)
            settings = json.loads((moved / "intent_router.json").read_text())
            settings["base_model"] = str(home / "gone" / "base-model")
            (moved / "intent_router.json").write_text(json.dumps(settings))
            lost = http.post("/v1/discover", json={"model": "hwu-moved", "all_models": True}, headers=admin)
            assert lost.status_code == 503, lost.text
            assert lost.json()["detail"].startswith(f"cannot load base model '{home / 'gone' / 'base-model'}'")
            assert lost.json()["detail"].endswith('Or send "encoder": "model" to cluster in the model\'s own space.')
            surrogate = http.post("/v1/discover", content=b'{"model": "hwu-4", "router": "bot\\ud800"}',
                                  headers={**admin, "Content-Type": "application/json"})  # fmt: skip
            assert surrogate.status_code == 422 and "router is not valid Unicode" in surrogate.text
            for edge in ({"since": "9999-12-31T23:00:00-14:00"}, {"until": "0001-01-01T00:00:00+01:00"}):
                outside = http.post("/v1/discover", json={"model": "hwu-4", **edge}, headers=admin)
                assert outside.status_code == 422 and "outside years 1 to 9999 once in UTC" in outside.text
                listed = http.get("/v1/low-confidence", params=edge, headers=admin)
                assert listed.status_code == 422 and "outside years 1 to 9999 once in UTC" in listed.text
            unknown = http.post("/v1/discover", json={"model": "nope"}, headers=admin)
            assert unknown.status_code == 404 and "hwu-4" in unknown.text
    finally:
        server.stop()


def test_post_discover_where_reports_cannot_be_written_says_so_before_the_run(
    known_model_dir, pool_rows, tmp_path_factory
):
    import httpx
    from test_service import Server

    home = tmp_path_factory.mktemp("discovery-unwritable")
    admin = service_home(home, known_model_dir, pool_rows)
    (home / "discovery-reports").write_text("a file where the reports folder goes\n", encoding="utf-8")
    server = Server(home, "--no-finetune-worker")
    try:
        answer = httpx.post(f"{server.url}/v1/discover", json={"model": "hwu-4"}, headers=admin, timeout=300)
    finally:
        server.stop()
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"].startswith(f"cannot write the discovery report in {home / 'discovery-reports'}")
    assert "make it a folder the server may write in" in answer.json()["detail"]
    assert "Traceback" not in (home / f"server-{server.port}.log").read_text()


def test_a_model_saved_before_heads_kept_centroids_is_refused_with_the_fix(known_model):
    from intent_router.head import LinearHead

    old = IntentClassifier()
    old.body_, old.labels_ = known_model.body_, known_model.labels_
    old.head_ = LinearHead(known_model.head_.weight, known_model.head_.bias)
    with pytest.raises(ValueError, match="fine-tune it again"):
        Discovery(old)


def test_heads_keep_their_intent_centroids_through_save_and_load(known_model, known_model_dir):
    loaded = IntentClassifier.load(known_model_dir)
    np.testing.assert_allclose(loaded.head_.centroids, known_model.head_.centroids)
    norms = np.linalg.norm(loaded.head_.centroids, axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_neighbours_match_a_brute_force_search(metric):
    from sklearn.metrics import pairwise_distances
    from sklearn.neighbors import NearestNeighbors

    from clustering.neighbours import nearest_neighbours

    rng = np.random.default_rng(0)
    points = rng.normal(size=(700, 12)).astype(np.float32)
    points[5] = points[4]  # a duplicate: each of the two still lists itself first
    indices, distances = nearest_neighbours(points, 8, metric)
    expected_distances, _ = (
        NearestNeighbors(n_neighbors=8, metric=metric, algorithm="brute").fit(points).kneighbors(points)
    )
    assert indices[:, 0].tolist() == list(range(700))
    assert (distances[:, 0] == 0).all()
    np.testing.assert_allclose(distances, expected_distances, atol=1e-4)  # the k smallest distances ...
    true_distances = pairwise_distances(points, metric=metric)
    reported = np.take_along_axis(true_distances, indices.astype(int), axis=1)
    np.testing.assert_allclose(reported[:, 1:], distances[:, 1:], atol=1e-4)  # ... and the rows at them


def test_exact_neighbours_refuse_an_unknown_metric_or_too_many_neighbours():
    from clustering.neighbours import nearest_neighbours

    points = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="manhattan"):
        nearest_neighbours(points, 2, "manhattan")
    with pytest.raises(ValueError, match="5 neighbours of 4 points"):
        nearest_neighbours(points, 5, "cosine")


def test_a_cluster_of_two_dense_parts_side_by_side_is_split_and_a_wide_one_is_not():
    import hdbscan

    from clustering import SplittingHDBSCAN

    rng = np.random.default_rng(3)
    pair = [rng.normal([0, 0], 0.3, (80, 2)), rng.normal([1.8, 0], 0.3, (80, 2))]
    wide = rng.normal([20, 0], 1.0, (300, 2))
    points = np.vstack([*pair, wide])
    left, right, far = slice(0, 80), slice(80, 160), slice(160, 460)
    stable = hdbscan.HDBSCAN(min_cluster_size=10).fit_predict(points)
    assert set(stable[left]) == set(stable[right]) == {0} != set(stable[far])  # HDBSCAN alone: one cluster
    found = SplittingHDBSCAN(10).fit_predict(points)
    assert len(set(found[left])) == len(set(found[right])) == len(set(found[far])) == 1
    assert len({found[0], found[80], found[160]}) == 3 and set(found.tolist()) == {0, 1, 2}
    assert ((found == -1) == (stable == -1)).all()  # the noise is HDBSCAN's, no more
    with pytest.raises(ValueError, match="split_share must be above 0 and at most 0.5, got 0.6"):
        SplittingHDBSCAN(10, split_share=0.6)


def test_umaps_compiled_functions_are_kept_on_disk_for_the_next_process(result):
    from umap import layouts, umap_

    for function in (umap_.smooth_knn_dist, layouts._nb_optimize_layout_euclidean_single_epoch):
        stats = function.stats
        assert sum(stats.cache_hits.values()) + sum(stats.cache_misses.values()) > 0, function  # cache used
        index = Path(function._cache.cache_path) / f"{function._cache._cache_file._index_name}"
        assert index.is_file(), index


def test_the_frozen_base_model_runs_on_onnx_runtime_exported_once(tmp_path, monkeypatch):
    monkeypatch.setenv("INTENT_ROUTER_CACHE", str(tmp_path))
    texts = [text for text, _ in rows_of(HIDDEN, 10)] + ["a & b <b>bold</b>"]
    onnx = frozen_encoder("english-small")
    files = list((tmp_path / "frozen-onnx").iterdir())
    assert len(files) == 1 and files[0].suffix == ".onnx", files  # no scratch file left
    stamp = files[0].stat().st_mtime_ns
    reference = encode(load_base_model("english-small"), texts)
    assert np.sum(onnx(texts) * reference, axis=1).min() > 0.9999
    frozen_encoder("english-small")
    assert list((tmp_path / "frozen-onnx").iterdir()) == files and files[0].stat().st_mtime_ns == stamp


def test_without_a_cache_folder_to_write_the_frozen_base_model_runs_on_torch(tmp_path, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("INTENT_ROUTER_CACHE", str(blocked))
    texts = ["set an alarm for seven", "will it rain tomorrow"]
    vectors = frozen_encoder("english-small")(texts)
    assert np.array_equal(vectors, encode(load_base_model("english-small"), texts))
    assert blocked.read_text() == "not a folder"
