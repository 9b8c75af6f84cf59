"""The on-disk model: a sentence-transformers folder plus the head and JSON, written atomically.

    models/atis/
        modules.json, config.json, model.safetensors, tokenizer.json, ...   the tuned body
        head.safetensors                                                     the linear head
        intent_router.json                                                   labels, training, versions
        metrics.json                                                         validation metrics

Nothing in it executes code on load: weights are safetensors, everything else JSON.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import math
import os
import re
import shutil
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError

from . import cleaning
from .combinations import Combinations
from .head import LinearHead, SigmoidHead

CONFIG_FILE = "intent_router.json"
HEAD_FILE = "head.safetensors"
METRICS_FILE = "metrics.json"
FORMAT = "intent-router-model"
# 2: the model cleans its texts with cleaning version 2, which intent-routers that write format 1 would
# not know to use (they would clean as version 1 without a word); every other model is still format 1.
FORMAT_VERSION = 2
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# ``.NAME.partial-PID-hHOST-RANDOM``; older intent-routers wrote no host, the oldest no PID either.
PARTIAL = re.compile(r"^\..+\.partial-(?:(?P<pid>\d+)-)?(?:h(?P<host>[0-9a-f]{8})-)?[0-9a-f]+$")


def machine() -> str:
    """Where a process ID names one process: this host, and its PID namespace when it has one
    (containers that share a host name, e.g. with host networking, do not share PIDs)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:  # not Linux
        return socket.gethostname()
    return f"{socket.gethostname()}/{namespace}"


# This machine in a staging folder's name: a models folder shared by several machines (NFS, a volume)
# holds other machines' saves, whose PIDs mean nothing here.
HOST = hashlib.sha256(machine().encode()).hexdigest()[:8]
PARTIAL_MAX_AGE = 3600.0  # seconds: a staging folder this old is left over, whoever wrote it


class ModelFolderError(RuntimeError):
    """A model folder that is missing, foreign, damaged or in the way."""


class ModelExistsError(ModelFolderError):
    """The target of a save without ``overwrite`` exists (perhaps saved by someone else meanwhile)."""


class ModelLoadError(ModelFolderError):
    """A saved model that cannot be loaded: its folder is missing, damaged, foreign or wrongly hand-edited.

    The message names the model, the problem and the fix: ``model 'atis' cannot be loaded: cannot read
    models/atis/head.safetensors: ...; retrain it or restore its folder``. The HTTP service answers 503.
    """

    def __init__(self, path: Path, problem: str, fix: str = "retrain it or restore its folder"):
        self.path, self.problem, self.fix = path, problem, fix
        super().__init__(f"model {path.name!r} cannot be loaded: {problem}; {fix}")


def write_model_folder(
    path: Path,
    body,
    head: LinearHead,
    config: dict,
    metrics: dict | None,
    overwrite: bool = False,
    files: dict[str, bytes] | None = None,
) -> Path:
    """Write into a hidden sibling folder, then rename it into place: readers never see half a model.

    Without ``overwrite`` the target is claimed only at the end, atomically (``mkdir``): if it
    appeared during the save, e.g. another save of the same name, this one fails and nothing is lost.
    ``files``: more files by relative path (the ONNX exports, the static student).
    """
    path = path.resolve()
    if path.exists() and not overwrite:
        raise _exists(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent)
    staging = staging_folder(path)
    try:
        try:
            _write_files(staging, body, head, config, metrics, files or {})
        except SafetensorError as err:  # safetensors reports a full disk in an error of its own, not an OSError
            raise ModelFolderError(
                f"cannot save the model in {path} ({err}); nothing was saved: free some space, or choose "
                "another models folder"
            ) from err
        if overwrite and path.exists():
            _replace(staging, path)  # the old model is left in staging, removed below
        else:
            _move_new(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _replace(staging: Path, path: Path) -> None:
    """Put the folder ``staging`` at ``path`` and the folder that was there at ``staging``.

    On Linux one atomic exchange (``renameat2`` with ``RENAME_EXCHANGE``): a reader, a crash or another
    save never finds no model under the name. Elsewhere, or on a file system without it, two renames.
    """
    if _exchange(staging, path):
        return
    retired = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(path, retired)
    os.rename(staging, path)
    os.rename(retired, staging)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's ``renameat2``; False where it is not available."""
    return _renameat2(a, b, RENAME_EXCHANGE, f"cannot replace {b}")


def _move_new(staging: Path, path: Path) -> None:
    """Rename ``staging`` to ``path``, which must not exist: of two savers, exactly one gets it.

    On Linux one atomic rename that refuses to replace (``RENAME_NOREPLACE``). Elsewhere ``path`` is
    claimed first (``mkdir``), then renamed onto; a crash between the two leaves it empty, which
    ``--overwrite`` replaces."""
    try:
        if _renameat2(staging, path, RENAME_NOREPLACE, f"cannot save the model as {path}"):
            return
    except FileExistsError:
        raise _exists(path) from None
    _claim(path)
    try:
        os.rename(staging, path)  # onto the empty folder just claimed
    except OSError:
        os.rmdir(path)
        raise


RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def _renameat2(a: Path, b: Path, flag: int, failure: str) -> bool:
    """Linux's ``renameat2(a, b, flag)``; False where the C library, kernel or file system lacks it."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flag) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    if error == errno.EEXIST:
        raise FileExistsError(error, f"{failure}: {os.strerror(error)}", str(b))
    raise OSError(error, f"{failure}: {os.strerror(error)}")


@functools.cache
def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def folder_stamp(folder: Path) -> tuple[int, int] | None:
    """The identity of a saved model: its ``intent_router.json``'s inode and change time (None: gone).
    A save under the same name, which replaces the folder, changes it."""
    try:
        status = os.stat(Path(folder) / CONFIG_FILE)
    except OSError:
        return None
    return status.st_ino, status.st_ctime_ns


def check_replaceable(path: Path) -> None:
    """Raise ``ModelFolderError`` if ``path`` exists and is not a model: an overwrite replaces models only,
    never a folder of something else that happens to have the name (it would be deleted); an empty one is
    replaced."""
    if path.is_dir() and ((path / CONFIG_FILE).is_file() or not any(path.iterdir())):
        return
    if path.exists():
        raise ModelFolderError(
            f"{path} is not an intent-router model (no {CONFIG_FILE}), so it is not replaced: choose another "
            "name, or move that folder away"
        )


def _write_files(staging: Path, body, head: LinearHead, config: dict, metrics: dict | None, files: dict) -> None:
    body.save(str(staging))
    head.save(staging / HEAD_FILE)
    for relative, content in files.items():
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        (staging / relative).write_bytes(content)
    _write_json(staging / CONFIG_FILE, {"format": FORMAT, "format_version": format_version(config), **config})
    _write_json(staging / METRICS_FILE, metrics)
    _give_files_the_usual_mode(staging, (staging / CONFIG_FILE).stat().st_mode)
    _fsync_tree(staging)


def check_writable(models_dir: Path) -> None:
    """Raise ``ModelFolderError`` if no model can be saved in ``models_dir``: checked before a fit, which
    would otherwise run its minutes and then fail to save. The folder need not exist yet (a save makes
    it): its nearest existing parent must then be a folder one may write in."""
    existing = models_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ModelFolderError(f"cannot save a model in {models_dir}: {existing} is not a folder; {_WRITABLE_FIX}")
    try:  # a write, not os.access: a read-only file system refuses even root
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ModelFolderError(
            f"cannot save a model in {models_dir}: cannot write in {existing} ({error.strerror}); {_WRITABLE_FIX}"
        ) from None


_WRITABLE_FIX = "choose a models folder one may write in, or make this one writable"


def _claim(path: Path) -> None:
    """Create ``path`` empty, or fail if anything is there: of two savers, exactly one gets it."""
    try:
        os.mkdir(path)
    except FileExistsError:
        raise _exists(path) from None


def _exists(path: Path) -> ModelExistsError:
    return ModelExistsError(f"{path} already exists; choose another name or overwrite it")


def format_version(config: dict) -> int:
    """The oldest format that describes the model: 2 if it cleans with a cleaning version above 1, else 1
    (so older intent-routers still load every model they would run the same way)."""
    return 2 if config.get("clean_text") and config.get("cleaning_version", cleaning.UNVERSIONED) > 1 else 1


def staging_folder(target: Path) -> Path:
    """Where a save of ``target`` is written before its atomic rename: a hidden folder beside it named
    for this process and machine, so ``remove_stale_partials`` can tell a dead save from a live one."""
    return target.parent / f".{target.name}.partial-{os.getpid()}-h{HOST}-{uuid.uuid4().hex[:8]}"


def remove_stale_partials(models_dir: Path, max_age: float = PARTIAL_MAX_AGE) -> list[Path]:
    """Remove the staging folders of saves that died: their writer process is gone, or they are old.

    A save's staging folder (``staging_folder``) names its writer's process and machine. One written
    less than ``max_age`` seconds ago is left alone unless its writer was a process of this machine
    that no longer exists; another machine's is left alone until it is that old. Returns the folders
    removed.
    """
    removed = []
    for folder in models_dir.glob(".*.partial-*") if models_dir.is_dir() else []:
        match = PARTIAL.match(folder.name)
        if match is None:
            continue
        try:
            age = time.time() - folder.stat().st_mtime
        except FileNotFoundError:  # its save finished meanwhile
            continue
        pid, host = match["pid"], match["host"]
        ours = host is None or host == HOST
        if age > max_age or (pid is not None and ours and not process_exists(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def process_exists(pid: int) -> bool:
    """Whether a process of this ID runs on this machine (a zombie counts until its parent reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def read_model_folder(path: Path, config: dict, device: str | None = None, load_body: bool = True):
    """Return (body, head, metrics) of the folder whose checked config (``read_config``) is ``config``;
    raise ``ModelLoadError`` saying what is wrong.

    ``load_body=False`` leaves the torch body unloaded (None), for the ONNX backends.
    """
    from sentence_transformers import SentenceTransformer

    labels = config["labels"]
    try:
        head = (SigmoidHead if config.get("multilabel", False) else LinearHead).load(path / HEAD_FILE)
    except Exception as err:
        raise ModelLoadError(path, f"cannot read {path / HEAD_FILE}: {err}") from err
    if head.n_classes != len(labels):
        raise ModelLoadError(
            path, f"the head has {head.n_classes} classes, but {path / CONFIG_FILE} lists {len(labels)} labels"
        )
    metrics_path = path / METRICS_FILE
    metrics = _read_json(metrics_path) if metrics_path.is_file() else None
    if metrics is not None and not isinstance(metrics, dict):
        raise ModelLoadError(path, f"{metrics_path} is not a JSON object of metrics")
    if not load_body:
        return None, head, metrics
    try:
        body = SentenceTransformer(str(path), device=device or "cpu", local_files_only=True)
    except Exception as err:
        raise ModelLoadError(path, f"cannot load the tuned body in {path}: {type(err).__name__}: {err}") from err
    dimension = body.get_embedding_dimension()
    if head.dimension != dimension:
        raise ModelLoadError(
            path,
            f"the head has {head.n_classes} classes of dimension {head.dimension}, but the model "
            f"has {len(labels)} labels and {dimension}-dimensional embeddings",
        )
    return body, head, metrics


def read_config(path: Path) -> dict:
    """A model folder's ``intent_router.json``, checked (``check_config``); the model is not loaded."""
    if not path.is_dir():
        raise ModelLoadError(path, f"no model folder at {path}")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ModelLoadError(
            path,
            f"{path} is not an intent-router model (no {CONFIG_FILE})",
            "a plain sentence-transformers folder can be used as base_model= to fine-tune from",
        )
    config = _read_json(config_path)
    check_config(config, config_path)
    return config


def check_config(config, config_path: Path) -> None:
    """Raise ``ModelLoadError`` naming the field of a model's ``intent_router.json`` that is wrong.

    The thresholds are checked here, on load, so a hand-edited value is refused with its file and
    field instead of failing (or silently misrouting) at the first request that reads it.
    """
    path = config_path.parent

    def refuse(problem: str, fix: str = "correct it, or retrain the model") -> ModelLoadError:
        return ModelLoadError(path, f"{config_path}: {problem}", fix)

    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelLoadError(path, f"{config_path} is not an intent-router model config")
    version = config.get("format_version", 0)
    if not _is_number(version):
        raise refuse(f"'format_version' is {version!r}; it must be a number")
    if version > FORMAT_VERSION:
        raise ModelLoadError(
            path, f"it was written by a newer intent-router (format {version})", "upgrade intent-router to load it"
        )
    labels = config.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise refuse("'labels' must be a list of at least two label names")
    if len(set(labels)) != len(labels):
        raise refuse(f"'labels' names {sorted({x for x in labels if labels.count(x) > 1})} more than once")
    cleaning_version = config.get("cleaning_version", cleaning.UNVERSIONED)
    if not isinstance(cleaning_version, int) or isinstance(cleaning_version, bool):
        raise refuse(f"'cleaning_version' is {cleaning_version!r}; it must be a whole number")
    if config.get("clean_text") and cleaning_version not in cleaning.VERSIONS:
        raise ModelLoadError(
            path,
            f"{config_path}: 'cleaning_version' is {cleaning_version!r}, a text cleaning this intent-router does "
            f"not know (it knows {', '.join(map(str, cleaning.VERSIONS))}): the model was trained by a newer "
            "intent-router",
            "upgrade intent-router to load it",
        )
    cosines = ("default_similarity_threshold", "default_review_similarity_threshold")
    for field, low in [("default_threshold", 0)] + [(name, -1) for name in cosines]:
        if field not in config:
            continue
        if not isinstance(config[field], dict):
            raise refuse(f"'{field}' is {config[field]!r}; it must be an object with a 'value' from {low} to 1")
        value = config[field].get("value")
        if not _is_number(value, low, 1):
            raise refuse(f"'{field}.value' is {value!r}; it must be a number from {low} to 1")
    if config.get("multilabel", False):
        _check_label_thresholds(config.get("label_thresholds"), labels, refuse)
        if config.get("label_combinations") is not None:  # None or absent: any set (saved before them)
            try:
                Combinations.from_json(config["label_combinations"], labels)
            except ValueError as err:
                raise refuse(f"'label_combinations' {err}", "correct it, or delete the key") from None
    inference = config.get("inference", {})
    if not isinstance(inference, dict):
        raise refuse(f"'inference' is {inference!r}; it must be an object")
    window = inference.get("max_seq_length", 256)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise refuse(f"'inference.max_seq_length' is {window!r}; it must be a whole number of tokens above 0")
    cascade = inference.get("cascade")
    if cascade is not None and not isinstance(cascade, dict):
        raise refuse(f"'inference.cascade' is {cascade!r}; it must be an object with a 'threshold' from 0 to 1")
    if cascade is not None and not _is_number(cascade.get("threshold"), 0, 1):
        raise refuse(f"'inference.cascade.threshold' is {cascade.get('threshold')!r}; it must be a number from 0 to 1")


def _check_label_thresholds(thresholds, labels: list[str], refuse: Callable[[str], ModelLoadError]) -> None:
    """A multilabel model's thresholds: a number from 0 to 1 for each of its labels, and no others."""
    if not isinstance(thresholds, dict):
        raise refuse(
            f"a multilabel model needs 'label_thresholds', an object with a number from 0 to 1 for each of "
            f"its labels, not {thresholds!r}"
        )
    missing, unknown = sorted(set(labels) - set(thresholds)), sorted(set(thresholds) - set(labels))
    if missing or unknown:
        wrong = "; ".join(
            ([f"no threshold for {missing}"] if missing else [])
            + ([f"{unknown} are not its labels"] if unknown else [])
        )
        raise refuse(f"'label_thresholds' must give a number from 0 to 1 for each of 'labels' and no other ({wrong})")
    for label in labels:
        if not _is_number(thresholds[label], 0, 1):
            raise refuse(f"'label_thresholds.{label}' is {thresholds[label]!r}; it must be a number from 0 to 1")


def _is_number(value, low: float = -math.inf, high: float = math.inf) -> bool:
    """A finite JSON number (not a boolean) from ``low`` to ``high``."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return math.isfinite(value) and low <= value <= high


def model_path(name: str, models_dir: Path) -> Path:
    """Where the model called ``name`` lives; names are plain so they cannot point outside the folder."""
    if not MODEL_NAME.match(name):
        raise ModelFolderError(
            f"model name {name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return models_dir / name


def read_labels(path: Path) -> list[str]:
    """The labels a model folder's config lists, without loading the model."""
    return read_config(path)["labels"]


def keeps_anchors(path: Path) -> bool:
    """Whether the model folder's head keeps anchors (``review_neighbours``), without loading it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path / HEAD_FILE), framework="numpy") as head:
            return "anchors" in head.keys()  # noqa: SIM118 (a safetensors file, not a dict)
    except Exception as err:  # a missing or damaged file: loading it would fail, and say how
        raise ModelLoadError(path, f"cannot read {path / HEAD_FILE}: {err}") from err


def list_models(models_dir: Path) -> list[tuple[str, dict, dict | None, str | None]]:
    """(name, config, metrics, problem) of every model folder in ``models_dir``, by name.

    A folder whose JSON cannot be read, or whose config is wrong (``check_config``), is listed too, with
    an empty config and the reason as ``problem``.
    """
    found: list[tuple[str, dict, dict | None, str | None]] = []
    for folder in sorted(models_dir.iterdir()) if models_dir.is_dir() else []:
        if folder.name.startswith(".") or not (folder / CONFIG_FILE).is_file():
            continue
        try:
            config = _read_json(folder / CONFIG_FILE)
            check_config(config, folder / CONFIG_FILE)
            metrics = _read_json(folder / METRICS_FILE) if (folder / METRICS_FILE).is_file() else None
        except ModelLoadError as err:
            found.append((folder.name, {}, None, f"{err.problem}; {err.fix}"))
            continue
        found.append((folder.name, config, metrics if isinstance(metrics, dict) else None, None))
    return found


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(path.parent, f"cannot read {path}: {err}") from err


def _give_files_the_usual_mode(folder: Path, usual: int) -> None:
    """Give every file in ``folder`` the mode ``usual`` (the mode of a file ``open`` just created there:
    0666 less the umask, e.g. 0644). safetensors writes through a private temporary file, so its
    weights would otherwise keep mode 0600, unreadable to the other users of a shared models folder."""
    for file in folder.rglob("*"):
        if file.is_file() and not file.is_symlink():
            file.chmod(stat.S_IMODE(usual))


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
