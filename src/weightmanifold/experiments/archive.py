"""Finished runs as small records that survive the machine: archive a sweep, recognise its runs.

A sweep directory (``runs/<preset>/``) holds checkpoints of tens of megabytes
per run, and ``runs/`` is not committed. What a sweep needs to tabulate a
finished run, and to skip it when the sweep is run again, is small: its
``summary.json`` (status, final metrics and the configuration), ``config.json``
and its metric tables. :func:`archive_sweep` copies exactly those files (and
the sweep's own tables and figures) into a directory that *is* committed,
``docs/results/<preset>/``, with the sweep's layout, so that on a fresh clone::

    mkdir -p runs/<preset> && cp -r docs/results/<preset>/. runs/<preset>/
    weightmanifold sweep <preset> ...

retrains nothing that finished and resumes with what did not.

A run counts as finished when its summary says ``completed`` and its
configuration equals the one asked for, up to :data:`PLACEMENT_KEYS` — where the
data lives, how many CPU threads ran it and how often it was checkpointed, which
do not change what is computed — and keys the run cannot feel (:func:`same_run`).
A finished run of *another* configuration is never trained over: training into
its directory raises :class:`~weightmanifold.experiments.checkpoint.CheckpointError`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError

__all__ = ["ARCHIVE_MAX_BYTES", "PLACEMENT_KEYS", "archive_sweep", "configuration_mismatch",
           "finished_run", "finished_summary", "inert_keys", "load_summary", "read_summary",
           "refuse_training_over", "same_run", "training_refusal"]

#: configuration keys that say where, with how many threads and how often checkpointed a
#: run ran, not what it computed: two runs that differ only in them are the same run
PLACEMENT_KEYS = frozenset({"data_dir", "threads", "checkpoint_every"})
#: the largest file :func:`archive_sweep` copies (checkpoints are never copied)
ARCHIVE_MAX_BYTES = 1 << 20
_NEVER = ("checkpoint.pt", "snapshots.pt")


def same_run(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two run configurations (``to_dict()``) compute the same run.

    Placement (:data:`PLACEMENT_KEYS`) and keys the run cannot feel
    (:func:`inert_keys`) do not count.

    Examples:
        >>> same_run({"lr": 0.1, "threads": 2}, {"lr": 0.1, "threads": None})
        True
        >>> same_run({"lr": 0.1}, {"lr": 0.2})
        False
    """
    keys = (set(a) | set(b)) - PLACEMENT_KEYS - inert_keys(a) - inert_keys(b)
    return all(a.get(k) == b.get(k) for k in keys)


#: Methods whose networks have no manifold: ``init`` cannot change their runs.
_NO_MANIFOLD = frozenset({"plain", "concat", "embed", "film", "embedding"})


def inert_keys(config: Mapping[str, Any]) -> frozenset[str]:
    """The keys of a run configuration that cannot change its run.

    ``init`` shapes where a manifold network starts; a run without one (``method``
    plain, concat, embed or film, or a diffusion run conditioned by its
    ``embedding`` alone) has nothing to initialise along ``s``, so its records
    stay valid whatever ``init`` they name (the experiments' default changed
    from ``"independent"`` to ``"constant"``). Every other method (``manifold``,
    the diffusion ``both``, any method this list does not know) keeps ``init``.

    Examples:
        >>> sorted(inert_keys({"method": "plain", "init": "independent"}))
        ['init']
        >>> sorted(inert_keys({"method": "manifold"}))
        []
        >>> sorted(inert_keys({"method": "both", "init": "independent"}))
        []
    """
    return frozenset({"init"}) if config.get("method") in _NO_MANIFOLD else frozenset()


def read_summary(run_dir: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(the summary.json of run_dir, None)``, or ``(None, why it cannot be read)``.

    ``(None, None)`` when there is none; a file that is not JSON, or JSON that is not
    an object, cannot be read.
    """
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return None, None
    try:
        with open(path) as f:
            done = json.load(f)
    except (OSError, ValueError) as err:
        return None, f"a summary.json that cannot be read ({err})"
    if not isinstance(done, dict):
        return None, "a summary.json that is not a JSON object"
    return done, None


def load_summary(run_dir: str | Path, *, missing_ok: bool = False) -> dict[str, Any] | None:
    """The ``summary.json`` of ``run_dir`` (:func:`read_summary`), or an error naming the run.

    Args:
        run_dir: a run directory.
        missing_ok: return ``None`` where there is no ``summary.json`` (a run that has
            not finished) instead of raising.

    Raises:
        FileNotFoundError: there is no ``summary.json`` (unless ``missing_ok``).
        ValueError: it cannot be read, or is not a JSON object.
    """
    done, why = read_summary(run_dir)
    if why is not None:
        raise ValueError(f"{run_dir}: {why}")
    if done is None and not missing_ok:
        raise FileNotFoundError(f"{run_dir}: no summary.json")
    return done


def finished_run(run_dir: str | Path, config: Mapping[str, Any],
                 statuses: tuple[str, ...] = ("completed",)
                 ) -> tuple[dict[str, Any] | None, str | None]:
    """``(the summary of the finished run of config in run_dir, None)``, or ``(None, why
    not)``.

    The reason is ``None`` where nothing finished there (no ``summary.json``, or a
    status not in ``statuses``: a run still training or killed); otherwise it says
    what is there instead: an unreadable summary, or a run of another configuration
    (:func:`configuration_mismatch`, up to :data:`PLACEMENT_KEYS`).
    """
    done, why = read_summary(run_dir)
    if done is None or done.get("status") not in statuses:
        return None, why
    saved = done.get("config")
    if not isinstance(saved, dict):
        return None, "a summary.json that records no configuration"
    mismatch = configuration_mismatch(saved, dict(config), ignore=PLACEMENT_KEYS)
    if mismatch:
        return None, f"a run of another configuration, left out ({mismatch})"
    return done, None


def finished_summary(run_dir: str | Path, config: Mapping[str, Any],
                     statuses: tuple[str, ...] = ("completed",)) -> dict[str, Any] | None:
    """The summary of the finished run in ``run_dir`` of ``config``, or ``None``.

    ``None`` when there is no readable ``summary.json``, when its status is not
    one of ``statuses`` (``"diverged"`` may count as final where a divergence is
    a result, as for a learning rate too large), or when it records another
    configuration (:func:`same_run`). :func:`finished_run` also says why.
    """
    return finished_run(run_dir, config, statuses)[0]


def configuration_mismatch(saved: dict[str, Any], mine: dict[str, Any], *,
                           ignore: frozenset[str] = frozenset(), hint: bool = True) -> str:
    """The keys in which two run configurations differ, as ``key: saved …, now …``.

    Keys in ``ignore`` and keys the runs cannot feel
    (:func:`~weightmanifold.experiments.archive.inert_keys`) do not count; a key
    one side lacks counts as ``None`` there, as in :func:`same_run`. When
    ``init`` differs from the old default and ``hint`` is set, the message names the
    sweep flag that continues such runs. Empty when the configurations agree.
    """
    ignore = ignore | inert_keys(saved) | inert_keys(mine)
    # a key one side lacks counts as None there, as in same_run: a key saved as None
    # that the configuration has since dropped is no difference
    keys = [*mine, *(k for k in saved if k not in mine)]
    diff = [k for k in keys if k not in ignore and saved.get(k) != mine.get(k)]
    details = "; ".join(f"{k}: saved {saved.get(k)!r}, now {mine.get(k)!r}" for k in diff)
    if hint and "init" in diff and saved.get("init") == "independent":
        details += (" -- runs made before the experiments' default init became 'constant' "
                    "(chosen by the init study, docs/results.md) keep theirs: continue them "
                    "with `weightmanifold sweep ... --init independent` or `--init "
                    "independent` on `weightmanifold train`")
    return details


def training_refusal(out: Path, mine: dict[str, Any], checkpoint: Path) -> str | None:
    """Why training ``mine`` into ``out`` must be refused, or ``None`` when it may train.

    It must when ``out`` holds a finished (``completed`` or ``diverged``)
    ``summary.json`` of a configuration other than ``mine`` (up to
    :data:`PLACEMENT_KEYS`; the name counts, as in :func:`finished_summary`) with no
    ``checkpoint`` to continue from: an archived result, which training there would
    overwrite. A ``summary.json`` that cannot be read (:func:`read_summary`: not
    JSON, or not a JSON object) beside no checkpoint may be one.

    Returns:
        The reason, as a phrase that follows the directory's name: ``"holds a
        finished run of another configuration (lr: saved 0.02, now 0.01) and no
        checkpoint to continue it from"``.
    """
    if checkpoint.exists():
        return None
    saved, why = read_summary(out)
    if why is not None:
        return f"has {why} and no checkpoint: it may hold a finished run"
    if saved is not None and saved.get("status") in ("completed", "diverged") \
            and isinstance(saved.get("config"), dict):
        mismatch = configuration_mismatch(saved["config"], mine, ignore=PLACEMENT_KEYS)
        if mismatch:
            return (f"holds a finished run of another configuration ({mismatch}) and no "
                    "checkpoint to continue it from")
    return None


def refuse_training_over(out: Path, mine: dict[str, Any], checkpoint: Path) -> None:
    """Refuse to train into ``out`` when it holds a finished run of another configuration.

    See :func:`training_refusal` for when.

    Raises:
        weightmanifold.experiments.checkpoint.CheckpointError: for such a run, or for
            an unreadable ``summary.json`` beside no checkpoint.
    """
    why = training_refusal(out, mine, checkpoint)
    if why is not None:
        raise CheckpointError(f"{out} {why}; move it away to train here, or train into "
                              "another directory")


def _unfinished_runs(source: Path) -> list[Path]:
    """The run directories below ``source`` (those holding a ``config.json``) whose
    ``summary.json`` does not say completed or diverged: runs still training, or
    killed, whose records without their checkpoint could neither resume nor count."""
    out = []
    for config in sorted(source.rglob("config.json")):
        if "checkpoints" in config.relative_to(source).parts:
            continue
        done, _ = read_summary(config.parent)
        status = done.get("status") if done is not None else None
        if status not in ("completed", "diverged"):
            out.append(config.parent)
    return out


def archive_sweep(source: str | Path, dest: str | Path, *,
                  max_bytes: int = ARCHIVE_MAX_BYTES) -> list[tuple[str, str]]:
    """Copy a sweep's tables, figures and its finished runs' small records from ``source``
    to ``dest``.

    Every file below ``source`` is copied to the same relative path below
    ``dest``, except checkpoints (``checkpoints/``, ``checkpoint.pt``,
    ``snapshots.pt``), hidden and temporary files, files larger than
    ``max_bytes``, and runs not finished (a directory with a ``config.json``
    whose ``summary.json`` is missing or says neither completed nor diverged: a
    run still training can be archived once it is done, and its records alone
    would neither resume nor count as finished). Small caches the sweep reuses
    are kept (the diffusion preset's ``classifier.pt``: its Fréchet distances
    depend on it). Files already in ``dest`` are overwritten; nothing in ``dest``
    is deleted.

    Args:
        source: the sweep directory (``runs/<preset>``).
        dest: the committed copy (``docs/results/<preset>``).
        max_bytes: the largest file copied.

    Returns:
        What was left out, for the caller to report: ``(relative path, reason)``,
        the reason ``"too large"`` for a file or ``"not finished"`` for a run
        directory.

    Raises:
        FileNotFoundError: if ``source`` is not a directory.
        ValueError: if ``dest`` is ``source`` or inside it.

    Examples:
        >>> import tempfile, pathlib
        >>> src = pathlib.Path(tempfile.mkdtemp())
        >>> (src / "a" / "seed_0" / "checkpoints").mkdir(parents=True)
        >>> _ = (src / "a" / "seed_0" / "summary.json").write_text("{}")
        >>> _ = (src / "a" / "seed_0" / "checkpoints" / "last.pt").write_text("x")
        >>> dest = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (src / "a" / "seed_0" / "config.json").write_text("{}")
        >>> _ = (src / "a" / "seed_0" / "summary.json").write_text('{"status": "completed"}')
        >>> (src / "a" / "seed_1").mkdir()
        >>> _ = (src / "a" / "seed_1" / "config.json").write_text("{}")
        >>> archive_sweep(src, dest)
        [('a/seed_1', 'not finished')]
        >>> sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
        ['a/seed_0/config.json', 'a/seed_0/summary.json']
    """
    source, dest = Path(source).resolve(), Path(dest).resolve()
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a sweep directory")
    if dest == source or source in dest.parents:
        raise ValueError(f"the archive {dest} must lie outside the sweep directory {source}")
    unfinished = _unfinished_runs(source)
    left_out = [(str(run.relative_to(source)), "not finished") for run in unfinished]
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if not path.is_file() or path.is_symlink() or "checkpoints" in rel.parts \
                or path.name in _NEVER or any(p.startswith(".") for p in rel.parts) \
                or path.suffix == ".tmp" or any(run in path.parents for run in unfinished):
            continue
        if path.stat().st_size > max_bytes:
            left_out.append((str(rel), "too large"))
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return left_out
