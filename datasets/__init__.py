"""Recorded behavioural data that pcneuro's paradigms are fitted to, and loaders for your own.

Each built-in dataset is a long-format CSV file in this package (one row per recorded value)
with a Markdown sidecar of the same name holding its provenance (specs/behaviour.md §0.3):
paper and figure panel, original experiment, how the values were obtained, units, caveats.
The values are stored verbatim, digit for digit, as published.

>>> from pcneuro import datasets
>>> datasets.available()
['fear_conditioning']
>>> ds = datasets.load("fear_conditioning")        # xarray.Dataset, dims (group, subject)
>>> ds.fear_to_N.sel(group="LN+").values.tolist()[:2]
[47.24872978275533, 23.47713468720331]

Your own recorded behaviour, in the same long format (a condition column, optionally a subject
column, one or more numeric measure columns), is read with :func:`load_csv`::

    ds = datasets.load_csv("my_rats.csv", condition_dim="group", unit_dim="subject")

Sidecar format: the Markdown file starts with a block of ``key: value`` lines between two
``---`` lines. The keys ``measure``, ``long_name``, ``units``, ``condition_dim`` and ``unit_dim``
describe the table; all keys except ``long_name`` and ``units`` also become attributes of the
loaded Dataset (the measure's ``long_name``/``units`` go on the data variable). The rest of the
file is prose for people; :func:`info` returns it.
"""
from __future__ import annotations

import csv
import difflib
import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

__all__ = ["available", "load", "load_csv", "info", "path"]

#: Folder holding the packaged data files (installed as package data of ``pcneuro.datasets``).
DATA_DIR = Path(__file__).resolve().parent

_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NOT_STATED = "not stated"


def available() -> list[str]:
    """Names of the packaged datasets, sorted (each is a ``<name>.csv`` in this package)."""
    return sorted(p.stem for p in DATA_DIR.glob("*.csv") if _NAME_RE.match(p.stem))


def path(name: str) -> Path:
    """Path of the packaged CSV file of dataset ``name``.

    Raises ``FileNotFoundError`` (one line, naming the path and the closest available names)
    if there is no such file, and ``ValueError`` if ``name`` is not a plain dataset name.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"dataset name must be letters, digits and underscores, got {name!r}; "
            f"available: {', '.join(available()) or 'none'}")
    csv_path = DATA_DIR / f"{name}.csv"
    if not csv_path.is_file():
        names = available()
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise FileNotFoundError(
            f"no dataset {name!r}: {csv_path} not found "
            f"(available: {', '.join(names) or 'none'}){hint}")
    return csv_path


def info(name: str) -> str:
    """The provenance sidecar (Markdown) of dataset ``name``, as text ('' if it has none)."""
    sidecar = path(name).with_suffix(".md")
    return sidecar.read_text(encoding="utf-8") if sidecar.is_file() else ""


def load(name: str) -> xr.Dataset:
    """Load packaged dataset ``name`` as an ``xarray.Dataset``.

    Dims are the dataset's condition dim(s) then its unit dim (fear conditioning:
    ``group`` x ``subject``), with labels in file order. The measure variable carries
    ``long_name``/``units`` attrs; provenance (source, figure panel, original experiment,
    method, caveats, stated means/SEMs) is in ``ds.attrs``.
    """
    csv_path = path(name)
    sidecar = csv_path.with_suffix(".md")
    meta = _read_front_matter(sidecar) if sidecar.is_file() else {}
    condition_dim = _split_names(meta.get("condition_dim", "condition"))
    unit_dim = meta.get("unit_dim") or None
    measure = meta.get("measure")
    units = meta.get("units", _NOT_STATED)
    long_name = meta.get("long_name")
    attrs = {k: v for k, v in meta.items() if k not in ("long_name", "units")}
    attrs.setdefault("name", name)
    ds = load_csv(
        csv_path,
        condition_dim=condition_dim,
        unit_dim=unit_dim,
        measures=[measure] if measure else None,
        units=units,
        long_names={measure: long_name} if measure and long_name else None,
        attrs=attrs,
    )
    # A packaged file is named relative to the package, not by an install-dependent path.
    del ds.attrs["source_file"]
    ds.attrs["data_file"] = f"pcneuro.datasets/{csv_path.name}"
    return ds


def load_csv(
    path: str | Path,
    condition_dim: str | Sequence[str] = "group",
    unit_dim: str | None = "subject",
    measures: Sequence[str] | None = None,
    units: str | Mapping[str, str] | None = None,
    long_names: Mapping[str, str] | None = None,
    attrs: Mapping[str, object] | None = None,
) -> xr.Dataset:
    """Read a long-format CSV of recorded behaviour into an ``xarray.Dataset``.

    Parameters
    ----------
    path
        CSV file with a header row. Fields containing commas must be quoted
        (``"LN+,L-"``), as any CSV writer does.
    condition_dim
        Column(s) holding the condition labels, e.g. ``"group"``; each becomes a dim whose
        labels are strings in order of first appearance. Use the paradigm's condition labels
        so the fit can pair simulation and data by key.
    unit_dim
        Column identifying the unit (subject, animal, participant) within a condition. If the
        column is absent, units are numbered 1, 2, ... within each condition in file order.
        ``None``: no unit dim, so each condition must have exactly one row (cell means).
    measures
        Numeric columns to read; default all columns not used as dims. Empty cells are NaN;
        conditions with fewer units than others are padded with NaN.
    units, long_names
        Units (one string for all measures, or a mapping per measure; default
        ``"not stated"``) and long names (default: the column name) for the measure attrs.
    attrs
        Extra Dataset attrs (provenance); ``source_file`` is always set.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (one line, naming the path).
    ValueError
        On a malformed table (missing column, ragged row, non-numeric value, duplicate
        (condition, unit) row), naming the file and line.
    """
    csv_path = Path(path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"data file not found: {csv_path}")
    condition_dims = [condition_dim] if isinstance(condition_dim, str) else list(condition_dim)
    if not condition_dims:
        raise ValueError("condition_dim must name at least one column")
    if unit_dim is not None and unit_dim in condition_dims:
        raise ValueError(f"unit_dim {unit_dim!r} is also a condition_dim")

    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        rows = [(line_no, row) for line_no, row in enumerate(csv.reader(fh), start=1)
                if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{csv_path}: empty file (expected a header row)")
    header = [h.strip() for h in rows[0][1]]
    body = rows[1:]
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise ValueError(f"{csv_path}: duplicate column(s) {dupes} in header")
    for col in condition_dims:
        if col not in header:
            raise ValueError(f"{csv_path}: no column {col!r} for condition_dim "
                             f"(columns: {', '.join(header)})")
    unit_in_file = unit_dim is not None and unit_dim in header
    dim_columns = condition_dims + ([unit_dim] if unit_in_file else [])
    if measures is None:
        measures = [h for h in header if h not in dim_columns]
    else:
        measures = list(measures)
        for m in measures:
            if m not in header:
                raise ValueError(f"{csv_path}: no measure column {m!r} "
                                 f"(columns: {', '.join(header)})")
            if m in dim_columns:
                raise ValueError(f"{csv_path}: column {m!r} is both a dim and a measure")
    if not measures:
        raise ValueError(f"{csv_path}: no measure columns besides {dim_columns}")
    col_index = {h: i for i, h in enumerate(header)}

    # Parse rows: key = condition labels (+ unit label), values = floats.
    records: list[tuple[tuple[str, ...], object, list[float]]] = []
    seen_units: dict[tuple[str, ...], int] = {}
    for line_no, row in body:
        if len(row) != len(header):
            raise ValueError(f"{csv_path}:{line_no}: {len(row)} fields, header has {len(header)} "
                             f"(quote labels that contain commas)")
        cond = tuple(row[col_index[c]].strip() for c in condition_dims)
        if unit_dim is None:
            unit = None
        elif unit_in_file:
            unit = row[col_index[unit_dim]].strip()
        else:
            seen_units[cond] = seen_units.get(cond, 0) + 1
            unit = seen_units[cond]
        values = []
        for m in measures:
            cell = row[col_index[m]].strip()
            if cell == "":
                values.append(math.nan)
                continue
            try:
                values.append(float(cell))
            except ValueError:
                raise ValueError(f"{csv_path}:{line_no}: column {m!r}: cannot read {cell!r} "
                                 f"as a number") from None
        records.append((cond, unit, values))
    if not records:
        raise ValueError(f"{csv_path}: no data rows")

    # Unit labels read from the file become ints when they all are.
    if unit_in_file:
        labels = [r[1] for r in records]
        if all(re.fullmatch(r"[+-]?\d+", lab) for lab in labels):
            records = [(c, int(u), v) for c, u, v in records]

    # Coordinates in order of first appearance.
    coords: dict[str, list] = {d: [] for d in condition_dims}
    unit_labels: list = []
    for cond, unit, _ in records:
        for d, lab in zip(condition_dims, cond):
            if lab not in coords[d]:
                coords[d].append(lab)
        if unit_dim is not None and unit not in unit_labels:
            unit_labels.append(unit)
    dims = list(condition_dims)
    if unit_dim is not None:
        dims.append(unit_dim)
        coords[unit_dim] = unit_labels
    shape = tuple(len(coords[d]) for d in dims)
    arrays = {m: np.full(shape, np.nan, dtype=np.float64) for m in measures}
    filled = np.zeros(shape, dtype=bool)
    index = {d: {lab: i for i, lab in enumerate(coords[d])} for d in dims}
    for (cond, unit, values), (line_no, _) in zip(records, body):
        pos = tuple(index[d][lab] for d, lab in zip(condition_dims, cond))
        if unit_dim is not None:
            pos = pos + (index[unit_dim][unit],)
        if filled[pos]:
            what = ", ".join(f"{d}={lab!r}" for d, lab in zip(dims, cond + ((unit,) if unit_dim else ())))
            hint = "" if unit_dim else " (unit_dim=None needs one row per condition)"
            raise ValueError(f"{csv_path}:{line_no}: duplicate row for {what}{hint}")
        filled[pos] = True
        for m, v in zip(measures, values):
            arrays[m][pos] = v

    def _units(m: str) -> str:
        if units is None:
            return _NOT_STATED
        if isinstance(units, str):
            return units
        return units.get(m, _NOT_STATED)

    data_vars = {
        m: (dims, arrays[m], {"long_name": (long_names or {}).get(m, m), "units": _units(m)})
        for m in measures
    }
    ds = xr.Dataset(data_vars, coords={d: coords[d] for d in dims})
    for d in condition_dims:
        ds[d].attrs["long_name"] = f"{d} (condition)"
    if unit_dim is not None:
        ds[unit_dim].attrs["long_name"] = (f"{unit_dim} (file column)" if unit_in_file
                                           else f"{unit_dim} (position within condition, file order)")
    ds.attrs.update({k: v for k, v in (attrs or {}).items()})
    ds.attrs["source_file"] = str(csv_path)
    return ds


def _split_names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _read_front_matter(md_path: Path) -> dict[str, str]:
    """``key: value`` lines between the leading ``---`` lines of a Markdown sidecar."""
    lines = md_path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    meta: dict[str, str] = {}
    for line_no, line in enumerate(lines[1:], start=2):
        if line.strip() == "---":
            return meta
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or not _KEY_RE.match(key):
            raise ValueError(f"{md_path}:{line_no}: expected 'key: value' in the front matter")
        meta[key] = value.strip()
    raise ValueError(f"{md_path}: front matter not closed by a '---' line")
