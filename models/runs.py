"""A run's folder and what says whether its outputs are current.

Each daily run keeps its model artefacts under `<home>/runs/<run date>/` (`RunPaths`). A step's
outputs carry a fingerprint of what they were made from (data versions, parameters, cutoff, code
version); a step whose outputs carry the current fingerprint does nothing. Folders are written
beside their final place and swapped in whole (`replacing`), so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.lake import Lake
    from models.train import TrainParams

MANIFEST = "manifest.json"
STAGED_METADATA = Path("assets.extra") / "towerflow.json"  # written by models.export.save


@dataclass(frozen=True)
class RunPaths:
    """Where one run's model artefacts live."""

    root: Path

    @property
    def staged(self) -> Path:
        return self.root / "staged"

    @property
    def record(self) -> Path:
        return self.root / "train.json"

    @property
    def training_set(self) -> Path:
        return self.root / "training_set"

    @property
    def candidates(self) -> Path:
        return self.root / "ranker_candidates"

    @property
    def refit(self) -> Path:
        """The chosen recipe refit through the run date (`refit_run`): what gets published."""
        return self.root / "refit"

    @property
    def baselines(self) -> Path:
        """Servable baseline pairs fitted on the run's training data, `<name>/{retrieval,ranking}`."""
        return self.staged / "baselines"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def decision(self) -> Path:
        return self.root / "gate.json"

    @property
    def tuning(self) -> Path:
        """`tune_run`'s report; its chosen settings are the run's (`run_params`)."""
        return self.root / "tuning"


REFIT = "refit.json"  # in the refit folder, once the refit is complete


def data_versions(lake: Lake) -> dict[str, int | None]:
    tables = [
        ("silver", "interactions"),
        ("silver", "items"),
        ("gold", "user_features"),
        ("gold", "item_features"),
        ("gold", "user_history"),
        ("gold", "training_examples"),
        ("gold", "holdout"),
    ]
    return {f"{layer}/{name}": lake.version(lake.uri(layer, name)) for layer, name in tables}


def fingerprint(versions: dict[str, Any], params: TrainParams, cutoff: datetime, code: str) -> str:
    """What a model was trained from: a rerun with the same inputs has the same fingerprint."""
    blob = json.dumps(
        {"data": versions, "params": asdict(params), "cutoff": cutoff.isoformat(), "code": code},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def code_version() -> str:
    from importlib.metadata import version

    return version("towerflow")


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def staged_fingerprint(model_dir: Path) -> str | None:
    meta = read_json(model_dir / STAGED_METADATA)
    return None if meta is None else meta.get("fingerprint")


@contextmanager
def replacing(folder: Path) -> Iterator[Path]:
    """A temporary sibling to write `folder`'s files into, swapped in when the block ends without
    error: a reader finds the old folder or the new one (whose manifest is written last), never
    half of one."""
    tmp = folder.parent / f".tmp-{folder.name}"
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a crashed attempt
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
