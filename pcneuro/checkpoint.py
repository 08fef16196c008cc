"""Per-chunk checkpoints of a run, so an interrupted job can be resumed (``--resume``).

Next to the output ``<out>.nc`` lives the folder ``<out>.nc.chunks/``: ``plan.json`` (the resolved
configuration, the chunk size and the chunk plan as run indices) and one ``chunk-000012.npz`` per
finished chunk (its run indices and one array ``[runs in chunk, *measure dims]`` per measure),
written atomically by the rank that simulated the chunk right after it finished. A paradigm that
checkpoints mid-run (:meth:`pcneuro.paradigm.Paradigm.save_state`, e.g. every epoch) also leaves
``chunk-000012.state.pt`` while the chunk runs (engine parameters, optimiser moments, generator
states, its loop position; read back with ``torch.load(weights_only=True)``, so no code runs from
it); it is removed when the chunk's results are saved. A chunk computes
the same bits wherever and whenever it runs (its runs and size depend on the configuration only),
so a resumed job that loads the finished chunks and simulates the rest writes the same data as an
uninterrupted one. The folder is removed once the results file is written.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

PLAN_FILE = "plan.json"
SUFFIX = ".chunks"
FORMAT = 1


def checkpoint_dir(output: Path) -> Path:
    """The checkpoint folder of an output file: ``results/x.nc`` -> ``results/x.nc.chunks``."""
    output = Path(output)
    return output.with_name(output.name + SUFFIX)


def output_of(folder: Path) -> Path:
    """The output file a checkpoint folder belongs to (inverse of :func:`checkpoint_dir`)."""
    folder = Path(folder)
    if not folder.name.endswith(SUFFIX):
        raise ValueError(f"--resume {folder}: not a checkpoint folder (its name should end in {SUFFIX})")
    return folder.with_name(folder.name[: -len(SUFFIX)])


def plan_record(config: Mapping[str, Any], chunk_size: int, chunks: Sequence[Sequence[int]]) -> Dict[str, Any]:
    """What ``plan.json`` holds: enough to refuse resuming a different job."""
    return {"format": FORMAT, "config": json.loads(json.dumps(dict(config), sort_keys=True)),
            "chunk_size": int(chunk_size), "chunks": [[int(i) for i in c] for c in chunks]}


def first_difference(old: Any, new: Any, where: str = "") -> Optional[str]:
    """A short description of the first place two JSON values differ, or None if they are equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            here = f"{where}.{key}" if where else str(key)
            if key not in new:
                return f"{here} (checkpoint {json.dumps(old[key])}, now absent)"
            if key not in old:
                return f"{here} (checkpoint: absent, now {json.dumps(new[key])})"
            found = first_difference(old[key], new[key], here)
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and where != "chunks":
        if len(old) != len(new) or old != new:
            return f"{where} (checkpoint {json.dumps(old)}, now {json.dumps(new)})"
        return None
    if old != new:
        if where == "chunks":
            return "chunks (the chunk plan differs)"
        return f"{where} (checkpoint {json.dumps(old)}, now {json.dumps(new)})"
    return None


def _write_bytes(path: Path, write) -> None:
    """``write(file)`` into ``path`` atomically (:func:`pcneuro.results.atomic_write`)."""
    from .results import atomic_write

    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            write(fh)

    atomic_write(path, fill)


class CheckpointStore:
    """The checkpoint folder of one job: its plan and its finished chunks."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def chunk_path(self, chunk_id: int) -> Path:
        return self.folder / f"chunk-{int(chunk_id):06d}.npz"

    # -- plan --------------------------------------------------------------------------------------
    def create(self, record: Mapping[str, Any]) -> None:
        """Start a new job's folder; refuse if one is there already (its chunks would be mixed in)."""
        if self.folder.exists():
            raise ValueError(f"checkpoints of an earlier, unfinished run are in {self.folder}: "
                             f"rerun with --resume to finish it, or delete that folder")
        try:
            self.folder.mkdir(parents=True)
            self._write_plan(record)
        except OSError as exc:
            raise ValueError(f"cannot write checkpoints to {self.folder} ({exc.strerror or exc})") from None

    def open(self, record: Mapping[str, Any]) -> None:
        """Resume: the folder must exist and hold the same plan (else one line naming the difference)."""
        plan_file = self.folder / PLAN_FILE
        if not plan_file.is_file():
            raise ValueError(f"--resume: no checkpoints to resume in {self.folder}")
        try:
            stored = json.loads(plan_file.read_text())
        except (OSError, ValueError):
            raise ValueError(f"--resume: {plan_file} is unreadable; delete {self.folder} and start again") from None
        diff = first_difference(stored, json.loads(json.dumps(dict(record))))
        if diff and diff.startswith("chunk_size"):
            raise ValueError(f"--resume: the chunk size differs from the checkpoint's: {diff}; pass "
                             f"--chunk {stored.get('chunk_size')} to resume, or delete {self.folder}")
        if diff:
            raise ValueError(f"--resume: the configuration differs from the checkpoint's in {diff}; "
                             f"rerun the original command, or delete {self.folder}")

    def _write_plan(self, record: Mapping[str, Any]) -> None:
        text = json.dumps(dict(record), indent=1, sort_keys=False).encode()
        _write_bytes(self.folder / PLAN_FILE, lambda f: f.write(text))

    # -- chunks ------------------------------------------------------------------------------------
    def save(self, chunk_id: int, run_indices: Sequence[int], measures: Mapping[str, np.ndarray]) -> None:
        """Write one finished chunk atomically."""
        arrays = {f"measure_{k}": np.asarray(v) for k, v in measures.items()}
        arrays["run_index"] = np.asarray(run_indices, dtype=np.int64)
        _write_bytes(self.chunk_path(chunk_id), lambda f: np.savez(f, **arrays))

    def load(self, chunk_id: int, run_indices: Sequence[int], measures: Sequence[str]) -> Optional[Dict[str, np.ndarray]]:
        """A finished chunk's measures ``{name: array[runs, ...]}``, or None if it is missing or
        invalid (unreadable, other runs, a measure missing or of the wrong length)."""
        path = self.chunk_path(chunk_id)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if list(data["run_index"]) != [int(i) for i in run_indices]:
                    return None
                out = {name: np.array(data[f"measure_{name}"]) for name in measures}
        except (OSError, ValueError, KeyError, EOFError):
            return None
        if any(len(v) != len(run_indices) for v in out.values()):
            return None
        return out

    # -- mid-run state -------------------------------------------------------------------------------
    def state_path(self, chunk_id: int) -> Path:
        return self.folder / f"chunk-{int(chunk_id):06d}.state.pt"

    def save_state(self, chunk_id: int, run_indices: Sequence[int], state: Mapping[str, Any]) -> None:
        """Write one chunk's mid-run state atomically (tensors to the host, numpy arrays kept)."""
        import torch

        payload = {"format": FORMAT, "run_index": [int(i) for i in run_indices], "state": _to_host(dict(state))}
        _write_bytes(self.state_path(chunk_id), lambda f: torch.save(payload, f))

    def load_state(self, chunk_id: int, run_indices: Sequence[int]) -> Optional[Dict[str, Any]]:
        """The chunk's mid-run state, or None if there is none or it is unreadable or of other runs."""
        import torch

        path = self.state_path(chunk_id)
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a torn or foreign file: start the chunk afresh
            return None
        if not isinstance(payload, dict) or payload.get("run_index") != [int(i) for i in run_indices]:
            return None
        return _from_host(payload["state"])

    def remove_state(self, chunk_id: int) -> None:
        self.state_path(chunk_id).unlink(missing_ok=True)

    def count_partial(self, n_chunks: int) -> int:
        """How many chunks have mid-run state but no results yet."""
        return sum(self.state_path(i).is_file() and not self.chunk_path(i).is_file() for i in range(n_chunks))

    def count_done(self, n_chunks: int) -> int:
        """How many chunk files there are (cheap: for the interruption message)."""
        return sum(self.chunk_path(i).is_file() for i in range(n_chunks))

    def remove(self) -> None:
        """Delete the folder (after the results file was written)."""
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def chunk_ids(chunks: Sequence[Sequence[Any]]) -> List[List[int]]:
    """The run indices of each chunk (for :func:`plan_record`)."""
    return [[int(r.index) for r in c] for c in chunks]


_NUMPY = "__numpy__"


def _to_host(value: Any) -> Any:
    """Tensors detached to the host; numpy arrays as tagged tensors (``weights_only`` loading reads
    tensors, not arrays); containers recursively."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, np.ndarray):
        return {_NUMPY: torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, dict):
        return {k: _to_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_host(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_NUMPY}:
            return value[_NUMPY].numpy()
        return {k: _from_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_from_host(v) for v in value)
    return value
