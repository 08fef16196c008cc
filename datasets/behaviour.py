"""Recorded behaviour: the packaged CSV files, their provenance sidecars, and loaders.

Specs: specs/behaviour.md §0.3 (recorded data, stored verbatim with provenance), §1.4 (fear
conditioning, 15 values), §2.4 and §2.7 item 6 (COIN-like sensorimotor adaptation, 96 points,
-0.0 normalised to 0, four conditions), §3.4 (probabilistic reversal learning, 4 cell means).

Two shapes of the same data:

* :func:`load_behaviour` / :func:`read_behaviour_csv`: the **long format** the fitting layer uses,
  one entry per recorded value along a dim ``point`` (file order). Data variable ``value``
  (float64, attrs ``long_name``, ``units``); one string coordinate along ``point`` per condition
  column (e.g. ``group``, or ``at`` and ``choice``); a ``subject`` coordinate where the file has
  one; other file columns kept as further coordinates along ``point`` (COIN's jittered ``x``).
  Attrs: provenance (packaged data), ``condition_dims`` (JSON list of the condition column
  names), ``measure`` (the paradigm measure the values correspond to), ``name``.
* :func:`load` / :func:`load_csv`: a **wide** Dataset, one dim per condition column plus a unit
  dim (fear conditioning: ``fear_to_N`` over ``group`` x ``subject``).

Every table is read with pandas, all cells as strings (``keep_default_na=False``, so labels such
as ``NA`` or ``-`` stay labels), then validated here; bad input gives a one-line ``ValueError``
naming the file, the line and the bad value. Line numbers count records from the header (line 1);
they equal file lines unless a quoted field spans lines. Entirely empty records (blank lines) are
skipped; a row with fewer fields than the header reads as empty trailing cells (pandas does not
tell the two apart), which the long-format reader rejects as an empty value or label.

Sidecar format: ``<name>.md`` starts with ``key: value`` lines between two ``---`` lines. The
keys ``measure``, ``long_name``, ``units``, ``condition_dim`` (comma-separated column names) and
``unit_dim`` describe the table; the others are provenance and become Dataset attrs.
"""
from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "DATA_DIR", "available", "path", "info",
    "load_behaviour", "read_behaviour_csv",
    "load", "load_csv",
]

#: Folder holding the packaged data files (installed as package data of ``pcneuro.datasets``).
DATA_DIR = Path(__file__).resolve().parent

_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_NOT_STATED = "not stated"
_SUBJECT = "subject"
_VALUE = "value"
_POINT = "point"
#: Sidecar keys that describe the table's shape rather than its provenance.
_SHAPE_KEYS = ("long_name", "units", "condition_dim", "unit_dim")


# --------------------------------------------------------------------------- packaged files

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


def _meta(name: str) -> tuple[Path, dict[str, str]]:
    csv_path = path(name)
    sidecar = csv_path.with_suffix(".md")
    return csv_path, (_read_front_matter(sidecar) if sidecar.is_file() else {})


# --------------------------------------------------------------------------- long format

def load_behaviour(name: str) -> xr.Dataset:
    """Packaged dataset ``name`` in the long format of :func:`read_behaviour_csv`.

    The condition columns and the measure come from the sidecar (``condition_dim``,
    ``measure``); the value column of the file is the measure's column. ``value`` gets the
    sidecar's ``long_name`` and ``units``; the other sidecar keys (paper, figure panel,
    original experiment, method, caveats, stated means) become attrs, with ``name``,
    ``measure``, ``condition_dims`` (JSON list) and ``data_file`` (package-relative).

    >>> ds = load_behaviour("reversal_learning")
    >>> ds.sizes["point"], json.loads(ds.attrs["condition_dims"]), ds.attrs["measure"]
    (4, ['at', 'choice'], 'value')
    """
    csv_path, meta = _meta(name)
    measure = meta.get("measure")
    if not measure or not meta.get("condition_dim"):
        raise ValueError(f"{csv_path.with_suffix('.md')}: sidecar needs 'measure' and 'condition_dim'")
    ds = read_behaviour_csv(csv_path, conditions=_split_names(meta["condition_dim"]), value=measure)
    ds[_VALUE].attrs.update(long_name=meta.get("long_name", measure), units=meta.get("units", _NOT_STATED))
    attrs = {k: v for k, v in meta.items() if k not in _SHAPE_KEYS}
    attrs.update(name=name, measure=measure, condition_dims=ds.attrs["condition_dims"],
                 value_column=ds.attrs["value_column"],
                 data_file=f"pcneuro.datasets/{csv_path.name}")
    ds.attrs = attrs
    return ds


def read_behaviour_csv(
    path: str | Path,
    conditions: str | Sequence[str] | None = None,
    labels: Mapping[str, Sequence[object]] | None = None,
    value: str | None = None,
) -> xr.Dataset:
    """Read a user's recorded behaviour (long-format CSV) into the long format used by the fits.

    The file (docs/data_format.md) has a header row, one row per recorded value, and columns:

    * one per condition dim of the paradigm (e.g. ``group``; or ``at`` and ``choice``), labels
      read as strings (a label containing a comma, ``"LN+,L-"``, is quoted as any CSV writer does);
    * the value: the column named by ``value=`` if given and present, else one named ``value``;
    * optionally ``subject`` (integers become ints, other labels stay strings); each
      (conditions, subject) pair may appear once;
    * any other column is kept as a further coordinate along ``point`` (float64 if all its cells
      are numbers, else strings).

    Parameters
    ----------
    conditions
        The condition column names expected (a paradigm's ``FitSpec.conditions``). ``None``: the
        keys of ``labels`` if given, else every column that is not ``subject``, not the value and
        not all numbers.
    labels
        Optional ``{dim: allowed labels}`` (e.g. a paradigm's coords); a label outside them is
        an error. Labels are compared as strings.
    value
        Name of the value column (e.g. the paradigm's measure, ``"fear_to_N"``); a column named
        ``value`` is accepted when no column of that name exists.

    Returns
    -------
    xarray.Dataset with dim ``point`` (file order), data variable ``value`` (float64; attrs
    ``long_name`` = the value column's name, ``units`` = "not stated"), a string coordinate
    along ``point`` per condition, ``subject`` if the file has it, and attrs ``name`` (file
    stem), ``measure`` (``value`` if given, else the value column's name), ``value_column``,
    ``condition_dims`` (JSON list) and ``source_file``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        One line naming the file and the bad value: empty file, header only, duplicate or unnamed
        column, missing condition or value column (listing the columns found and expected),
        empty label, unknown label (listing the allowed ones), a value that is not a finite
        number (with its line), a repeated (conditions, subject) pair.
    """
    csv_path = Path(path)
    header, table, lines = _read_table(csv_path)
    found = ", ".join(repr(h) for h in header)

    value_names = [value, _VALUE] if value and value != _VALUE else [_VALUE]
    value_col = next((v for v in value_names if v in header), None)
    if value_col is None:
        wanted = " or ".join(repr(v) for v in value_names)
        given = [conditions] if isinstance(conditions, str) else list(conditions or labels or [])
        expected = ", ".join([repr(c) for c in given] + [wanted])
        raise ValueError(f"{csv_path}: no value column {wanted} "
                         f"(columns found: {found}; expected: {expected})")
    if value_col != _VALUE and _VALUE in header:
        raise ValueError(f"{csv_path}: both {value_col!r} and 'value' columns; keep one value column")

    if conditions is None:
        if labels:
            conditions = list(labels)
        else:
            conditions = [h for h in header if h not in (value_col, _SUBJECT)
                          and not _all_numbers(table[h])]
            if not conditions:
                raise ValueError(f"{csv_path}: no condition column (columns found: {found}; every "
                                 f"column besides {value_col!r} is numeric: pass conditions=)")
    elif isinstance(conditions, str):
        conditions = [conditions]
    conditions = list(conditions)
    if not conditions:
        raise ValueError(f"{csv_path}: conditions must name at least one column")
    if len(set(conditions)) != len(conditions):
        raise ValueError(f"{csv_path}: conditions {conditions} repeat a name")
    for c in conditions:
        if c in (value_col, _SUBJECT, _POINT):
            raise ValueError(f"{csv_path}: {c!r} cannot be a condition column")
    missing = [c for c in conditions if c not in header]
    if missing:
        expected = ", ".join(repr(c) for c in conditions + [value_col])
        raise ValueError(f"{csv_path}: no column {', '.join(repr(m) for m in missing)} "
                         f"(columns found: {found}; expected: {expected})")
    if _POINT in header:
        raise ValueError(f"{csv_path}: a column may not be named 'point' (the long format's dim)")

    allowed: dict[str, list[str]] = {}
    for dim, labs in (labels or {}).items():
        if dim not in conditions:
            raise ValueError(f"{csv_path}: labels given for {dim!r}, which is not a condition "
                             f"column ({', '.join(repr(c) for c in conditions)})")
        allowed[dim] = [str(lab) for lab in labs]
    for dim in conditions:
        column = table[dim]
        empty = np.flatnonzero(column.to_numpy() == "")
        if empty.size:
            raise ValueError(f"{csv_path}:{lines[empty[0]]}: empty {dim!r} label")
        if dim in allowed:
            bad = np.flatnonzero(~column.isin(allowed[dim]).to_numpy())
            if bad.size:
                i = bad[0]
                raise ValueError(f"{csv_path}:{lines[i]}: unknown {dim} label {column.iloc[i]!r} "
                                 f"(allowed: {', '.join(repr(a) for a in allowed[dim])})")

    values = _finite_column(csv_path, table, value_col, lines)
    coords: dict[str, tuple] = {
        dim: (_POINT, table[dim].to_numpy().astype(str), {"long_name": f"{dim} (condition)"})
        for dim in conditions}
    if _SUBJECT in header:
        subjects = table[_SUBJECT]
        empty = np.flatnonzero(subjects.to_numpy() == "")
        if empty.size:
            raise ValueError(f"{csv_path}:{lines[empty[0]]}: empty 'subject' label")
        keys = table[conditions + [_SUBJECT]]
        dup = np.flatnonzero(keys.duplicated().to_numpy())
        if dup.size:
            i = dup[0]
            what = ", ".join(f"{k}={keys.iloc[i][k]!r}" for k in keys.columns)
            raise ValueError(f"{csv_path}:{lines[i]}: repeated row for {what}")
        coords[_SUBJECT] = (_POINT, _unit_labels(subjects), {"long_name": "subject (file column)"})
    for extra in header:
        if extra in coords or extra == value_col:
            continue
        column = table[extra]
        data = (pd.to_numeric(column).to_numpy(np.float64) if _all_numbers(column)
                else column.to_numpy().astype(str))
        coords[extra] = (_POINT, data, {"long_name": f"{extra} (file column)"})

    ds = xr.Dataset(
        {_VALUE: (_POINT, values, {"long_name": value_col, "units": _NOT_STATED})},
        coords=coords)
    ds.attrs = {
        "name": csv_path.stem,
        "measure": value or value_col,
        "value_column": value_col,
        "condition_dims": json.dumps(conditions),
        "source_file": str(csv_path),
    }
    return ds


# --------------------------------------------------------------------------- wide format

def load(name: str) -> xr.Dataset:
    """Load packaged dataset ``name`` as a wide ``xarray.Dataset``.

    Dims are the dataset's condition dim(s) then its unit dim, if any (fear conditioning:
    ``group`` x ``subject``; sensorimotor adaptation: ``exposure`` x ``index``, padded with NaN
    where a condition has fewer points; reversal learning: ``at`` x ``choice``), labels in file
    order. The measure variable carries ``long_name``/``units``; provenance is in ``ds.attrs``.
    """
    csv_path, meta = _meta(name)
    measure = meta.get("measure")
    long_name = meta.get("long_name")
    attrs = {k: v for k, v in meta.items() if k not in ("long_name", "units")}
    attrs.setdefault("name", name)
    ds = load_csv(
        csv_path,
        condition_dim=_split_names(meta.get("condition_dim", "condition")),
        unit_dim=meta.get("unit_dim") or None,
        measures=[measure] if measure else None,
        units=meta.get("units", _NOT_STATED),
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
    """Read a long-format CSV of recorded behaviour into a wide ``xarray.Dataset``.

    Parameters
    ----------
    path
        CSV file with a header row. Fields containing commas must be quoted
        (``"LN+,L-"``), as any CSV writer does.
    condition_dim
        Column(s) holding the condition labels, e.g. ``"group"``; each becomes a dim whose
        labels are strings in order of first appearance.
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
        On a malformed table (missing or duplicate column, too many fields in a row,
        non-numeric value, duplicate (condition, unit) row), naming the file and line.
    """
    csv_path = Path(path)
    condition_dims = [condition_dim] if isinstance(condition_dim, str) else list(condition_dim)
    if not condition_dims:
        raise ValueError("condition_dim must name at least one column")
    if unit_dim is not None and unit_dim in condition_dims:
        raise ValueError(f"unit_dim {unit_dim!r} is also a condition_dim")
    header, table, lines = _read_table(csv_path)
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

    arrays_1d = {}
    for m in measures:
        column = table[m]
        parsed = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)  # "" -> NaN
        said_nan = column.str.fullmatch(r"|[+-]?nan", case=False).to_numpy()
        bad = np.flatnonzero(np.isnan(parsed) & ~said_nan)
        if bad.size:
            i = bad[0]
            raise ValueError(f"{csv_path}:{lines[i]}: column {m!r}: cannot read "
                             f"{column.iloc[i]!r} as a number")
        arrays_1d[m] = parsed

    conds = table[condition_dims].astype(str)
    if unit_dim is None:
        units_col = None
    elif unit_in_file:
        units_col = _unit_labels(table[unit_dim]).tolist()
    else:  # position within condition, file order
        units_col = (conds.groupby(condition_dims, sort=False).cumcount() + 1).tolist()

    dims = list(condition_dims) + ([unit_dim] if unit_dim is not None else [])
    key_table = conds.copy()
    if unit_dim is not None:
        key_table[unit_dim] = units_col
    coords = {d: list(pd.unique(key_table[d])) for d in dims}
    dup = np.flatnonzero(key_table.duplicated().to_numpy())
    if dup.size:
        i = dup[0]
        what = ", ".join(f"{d}={key_table.iloc[i][d]!r}" for d in dims)
        hint = "" if unit_dim else " (unit_dim=None needs one row per condition)"
        raise ValueError(f"{csv_path}:{lines[i]}: duplicate row for {what}{hint}")
    positions = tuple(pd.Index(coords[d]).get_indexer(key_table[d]) for d in dims)
    shape = tuple(len(coords[d]) for d in dims)

    def _units(m: str) -> str:
        if units is None:
            return _NOT_STATED
        return units if isinstance(units, str) else units.get(m, _NOT_STATED)

    data_vars = {}
    for m in measures:
        array = np.full(shape, np.nan, dtype=np.float64)
        array[positions] = arrays_1d[m]
        data_vars[m] = (dims, array, {"long_name": (long_names or {}).get(m, m), "units": _units(m)})
    ds = xr.Dataset(data_vars, coords=coords)
    for d in condition_dims:
        ds[d].attrs["long_name"] = f"{d} (condition)"
    if unit_dim is not None:
        ds[unit_dim].attrs["long_name"] = (f"{unit_dim} (file column)" if unit_in_file
                                           else f"{unit_dim} (position within condition, file order)")
    ds.attrs.update(dict(attrs or {}))
    ds.attrs["source_file"] = str(csv_path)
    return ds


# --------------------------------------------------------------------------- helpers

def _read_table(csv_path: Path) -> tuple[list[str], pd.DataFrame, np.ndarray]:
    """(header, body of stripped string cells, line number of each body row) of a CSV file."""
    if not csv_path.is_file():
        raise FileNotFoundError(f"data file not found: {csv_path}")
    try:
        raw = pd.read_csv(csv_path, header=None, dtype=str, keep_default_na=False,
                          skip_blank_lines=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise ValueError(f"{csv_path}: empty file or blank first line "
                         f"(expected a header row on line 1)") from None
    except pd.errors.ParserError as err:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if found:
            n_header, line_no, n_row = found.groups()
            raise ValueError(f"{csv_path}:{line_no}: {n_row} fields, header has {n_header} "
                             f"(quote labels that contain commas)") from None
        raise ValueError(f"{csv_path}: cannot parse as CSV: {' '.join(str(err).split())}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{csv_path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    raw = raw.apply(lambda column: column.str.strip())
    header = raw.iloc[0].tolist()
    unnamed = [i for i, h in enumerate(header, start=1) if h == ""]
    if unnamed:
        raise ValueError(f"{csv_path}: column {unnamed[0]} has no name in the header")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise ValueError(f"{csv_path}: duplicate column(s) {', '.join(repr(d) for d in dupes)} in header")
    body = raw.iloc[1:]
    lines = np.arange(2, len(raw) + 1)
    keep = (body != "").any(axis=1).to_numpy()  # entirely empty records are blank lines
    body, lines = body[keep], lines[keep]
    if body.empty:
        raise ValueError(f"{csv_path}: no data rows (header only)")
    body.columns = header
    return header, body.reset_index(drop=True), lines


def _all_numbers(column: pd.Series) -> bool:
    parsed = pd.to_numeric(column, errors="coerce")
    return bool(np.isfinite(parsed.to_numpy(np.float64)).all())


def _finite_column(csv_path: Path, table: pd.DataFrame, name: str, lines: np.ndarray) -> np.ndarray:
    column = table[name]
    parsed = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(parsed))
    if bad.size:
        i, cell = bad[0], column.iloc[bad[0]]
        what = "empty cell (or a short row)" if cell == "" else f"{cell!r} is not a finite number"
        raise ValueError(f"{csv_path}:{lines[i]}: column {name!r}: {what}")
    return parsed


def _unit_labels(column: pd.Series) -> np.ndarray:
    """Unit labels: ints when every label is an integer, else strings."""
    if column.str.fullmatch(_INT_RE.pattern).all():
        return column.astype(np.int64).to_numpy()
    return column.to_numpy().astype(str)


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
