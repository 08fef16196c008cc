"""Results: one xarray.Dataset per invocation, written atomically as compressed NetCDF4.

Dims: ``rule``, ``seed``, one dim per grid axis (named as the hyperparameter), then the paradigm's
own dims. Data variables are the paradigm's measures with ``long_name``/``units``. Global attrs
record what ran: paradigm and version, the resolved configuration (JSON), the command line,
pcneuro/torch versions, git commit, device, MPI size, start/end time and elapsed seconds.
Results are the interface: fitting and plotting reopen them with ``xarray.open_dataset``.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import xarray as xr

import pcneuro

from .runner import Plan


def git_commit() -> str:
    """The commit of the pcneuro checkout in use (with ``-dirty`` for local changes), or 'unknown'."""
    root = Path(pcneuro.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_dataset(plan: Plan, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> xr.Dataset:
    from .registry import paradigm_class

    cls = paradigm_class(plan.paradigm)
    paradigm = cls()
    first = plan.runs[0].settings
    own = paradigm.coords(first)
    coords: Dict[str, Any] = {"rule": list(plan.rules), "seed": list(plan.seeds)}
    for k, v in plan.grid.items():
        coords[k] = list(v)
    data_vars = {}
    lead = ["rule", "seed", *plan.grid]
    for name, measure in cls.measures.items():
        dims = lead + list(measure.dims)
        data_vars[name] = xr.Variable(dims, arrays[name], attrs={"long_name": measure.long_name,
                                                                 "units": measure.units})
        for d in measure.dims:
            if d in own:
                coords[d] = list(own[d])
    ds = xr.Dataset(data_vars, coords=coords)
    ds["rule"].attrs["long_name"] = "learning rule"
    ds["seed"].attrs["long_name"] = "random seed"
    for k in plan.grid:
        h = cls.hyperparameters[k]
        ds[k].attrs.update({"long_name": h.doc, "units": h.units or "1"})
    attrs = {
        "paradigm": plan.paradigm,
        "paradigm_version": cls.version,
        "title": cls.title,
        "citation": cls.citation,
        "figure": cls.figure,
        "dtype": cls.dtype,
        "config": plan.to_json(),
        "pcneuro_version": pcneuro.__version__,
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
    }
    attrs.update(meta)
    ds.attrs.update({k: _attr(v) for k, v in attrs.items()})
    return ds


def grid_dims(ds: xr.Dataset) -> List[str]:
    """The grid axes of a results dataset, in plan order (from its recorded configuration)."""
    return list(json.loads(ds.attrs["config"])["grid"])


def stack_conditions(da: xr.DataArray, dims: Sequence[str], label: str) -> Tuple[xr.DataArray, List[str]]:
    """Stack the condition ``dims`` of ``da`` into one ``_cond`` axis with readable labels
    (``"LN+"``, or ``"a, b"`` for several dims); with no dims, one condition called ``label``."""
    if not dims:
        return da.expand_dims(_cond=[label]), [label]
    stacked = da.stack(_cond=list(dims))
    labels = [", ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in stacked["_cond"].values]
    return stacked, labels


def _attr(value: Any):
    """NetCDF attributes are strings or numbers."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str, np.integer, np.floating)):
        return value
    return json.dumps(value)


def default_path(paradigm: str, run_id: str, root: str = "results") -> Path:
    return Path(root) / paradigm / f"{run_id}.nc"


def new_run_id(plan: Plan, when: Optional[_dt.datetime] = None) -> str:
    """``<date>-<time>-<config hash>-<random>``: sortable, tied to the configuration, and unique even
    for the same command started twice in one second."""
    import hashlib

    when = when or _dt.datetime.now()
    digest = hashlib.sha256(plan.to_json().encode()).hexdigest()[:6]
    return f"{when:%Y%m%d-%H%M%S}-{digest}-{os.urandom(2).hex()}"


def output_path(plan: Plan, out=None) -> Path:
    """Where a run's results go: ``out`` itself when it ends in ``.nc`` (a file), else the folder
    ``out`` (created if need be) with ``<run-id>.nc`` inside; ``results/<paradigm>/<run-id>.nc`` by
    default. An existing folder is a folder whatever its name; an existing file without the ``.nc``
    suffix is a ``ValueError`` (a file would be written without the suffix readers expect)."""
    if out is None:
        return default_path(plan.paradigm, new_run_id(plan))
    text = os.fspath(out)
    path = Path(text)
    if path.is_dir() or text.endswith(os.sep) or (os.altsep and text.endswith(os.altsep)):
        return path / f"{new_run_id(plan)}.nc"
    if path.suffix.lower() == ".nc":
        return path
    if path.exists():
        raise ValueError(f"--out {text} is an existing file without the .nc suffix (a path without it is a "
                         f"folder); give FILE.nc or a folder")
    return path / f"{new_run_id(plan)}.nc"


def check_writable(path: Path) -> None:
    """Fail early (before any simulation) if ``path`` cannot be written; leave nothing behind."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--out {path} is a directory")
    parent = path.parent
    created = []
    try:
        missing = [p for p in [parent, *parent.parents] if not p.exists()]
        for p in reversed(missing):
            p.mkdir()
            created.append(p)
        fd, probe = tempfile.mkstemp(prefix=".pcneuro-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"--out {path} is not writable ({exc.strerror or exc})") from None
    finally:
        for p in reversed(created):
            p.rmdir()


def prepare_output(plan: Plan, out, comm) -> Path:
    """The output path of a plan, checked writable on rank 0 before any simulation; every rank gets
    the same path or the same ``ValueError``."""
    path = output_path(plan, out)
    error = None
    if comm.is_root:
        try:
            check_writable(path)
        except ValueError as exc:
            error = str(exc)
    error = comm.bcast(error)
    if error:
        raise ValueError(error)
    return Path(comm.bcast(str(path)))


#: NetCDF4 compression of the numeric data variables: the default fear-conditioning grid's file
#: (1 024 runs) shrinks 3.7x (1.59 MB to 0.43 MB) for a few hundredths of a second of writing
COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}


def compressed(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy of ``ds`` whose numeric data variables are written zlib-compressed (lossless;
    xarray and netCDF4 readers decompress transparently). ``ds`` itself is left as it was."""
    out = ds.copy(deep=False)
    for name, var in out.data_vars.items():
        if var.ndim and var.dtype.kind in "biuf":
            encoding = {k: v for k, v in var.encoding.items() if k != "contiguous"}
            out[name].encoding = {**encoding, **COMPRESSION}
    return out


def atomic_write(path, write) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file (a Path in the same folder),
    which then replaces ``path`` with the permissions of any new file (mkstemp makes 0600; results
    are shared like any other file). Nothing is left behind if ``write`` fails."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_netcdf(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` to ``path`` atomically (:func:`atomic_write`), its numeric data variables
    compressed (:data:`COMPRESSION`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: compressed(ds).to_netcdf(tmp, engine="netcdf4", format="NETCDF4"))
