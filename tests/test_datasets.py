"""Recorded data files and loaders (specs/behaviour.md §0.3, §1.4)."""
import csv
import math

import numpy as np
import pytest

from pcneuro import datasets

# specs/behaviour.md §1.4, as text: the file must hold these digits exactly.
FEAR_VALUES = {
    "LN+": ["47.24872978275533", "23.47713468720331", "19.880670399836205",
            "13.862975007958582", "24.757350992262996"],
    "LN+,L-": ["49.84528803043753", "51.442164621276824", "40.05602559086313",
               "46.52921815201096", "27.845251568225706"],
    "N+": ["51.77500851953603", "50.038818231666866", "35.143724222268034",
           "42.84476774272263", "42.02041322905141"],
}
FEAR_STATED_MEANS = {
    "LN+": 25.845372174003284,
    "LN+,L-": 43.14358959256283,
    "N+": 44.36454638904899,
}
FEAR_STATED_SEMS = {"LN+": 5.67, "LN+,L-": 4.29, "N+": 3.00}


def _read_fear_rows():
    with datasets.path("fear_conditioning").open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, list(reader)


def test_available_lists_fear_conditioning():
    assert "fear_conditioning" in datasets.available()


def test_fear_file_verbatim_long_format():
    header, rows = _read_fear_rows()
    assert header == ["group", "subject", "fear_to_N"]
    assert [r[0] for r in rows] == [g for g in FEAR_VALUES for _ in FEAR_VALUES[g]]
    for group, texts in FEAR_VALUES.items():
        got = [(r[1], r[2]) for r in rows if r[0] == group]
        assert got == [(str(i), t) for i, t in enumerate(texts, start=1)]
    raw = datasets.path("fear_conditioning").read_text(encoding="utf-8")
    assert '"LN+,L-",1,49.84528803043753' in raw  # the comma-containing label is quoted


def test_fear_stated_means_recomputed_in_file_order():
    _, rows = _read_fear_rows()
    for group, stated in FEAR_STATED_MEANS.items():
        total, n = np.float64(0.0), 0
        for row in rows:  # left-to-right, file order, float64
            if row[0] == group:
                total = total + np.float64(row[2])
                n += 1
        assert n == 5
        assert math.isclose(float(total / n), stated, rel_tol=1e-12, abs_tol=0.0), group


def test_fear_stated_sems_match_ddof1():
    ds = datasets.load("fear_conditioning")
    for group, stated in FEAR_STATED_SEMS.items():
        v = ds.fear_to_N.sel(group=group).values
        assert round(float(v.std(ddof=1) / math.sqrt(v.size)), 2) == stated


def test_fear_loader_dims_labels_attrs():
    ds = datasets.load("fear_conditioning")
    da = ds["fear_to_N"]
    assert da.dims == ("group", "subject")
    assert da.dtype == np.float64
    assert ds["group"].values.tolist() == ["LN+", "LN+,L-", "N+"]
    assert ds["subject"].values.tolist() == [1, 2, 3, 4, 5]
    assert da.attrs["units"] == "not stated"
    assert da.attrs["long_name"]
    for group, texts in FEAR_VALUES.items():
        assert da.sel(group=group).values.tolist() == [float(t) for t in texts]
    means = da.mean("subject")
    for group, stated in FEAR_STATED_MEANS.items():
        assert math.isclose(float(means.sel(group=group)), stated, rel_tol=1e-12)
    attrs = ds.attrs
    assert "Song" in attrs["source"] and "Nature Neuroscience" in attrs["source"]
    assert "Matzel" in attrs["original_experiment"] and "[inferred]" in attrs["original_experiment"]
    assert "digitised" in attrs["method"]
    assert attrs["figure_panel"] and attrs["caveats"]
    assert attrs["data_file"].endswith("fear_conditioning.csv")


@pytest.mark.parametrize("name", datasets.available())
def test_every_dataset_has_provenance(name):
    ds = datasets.load(name)
    for key in ("source", "figure_panel", "original_experiment", "method", "caveats"):
        assert ds.attrs.get(key), f"{name}: provenance attr {key!r} missing"
    assert "digitised" in datasets.info(name)


def test_unknown_dataset_is_one_line_file_not_found():
    with pytest.raises(FileNotFoundError) as err:
        datasets.load("fear_conditionin")
    msg = str(err.value)
    assert "\n" not in msg
    assert "fear_conditionin.csv" in msg and "fear_conditioning" in msg
    with pytest.raises(ValueError):
        datasets.load("../fear_conditioning")


def test_load_csv_missing_file_names_path(tmp_path):
    missing = tmp_path / "no_such.csv"
    with pytest.raises(FileNotFoundError) as err:
        datasets.load_csv(missing)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)


def test_load_csv_user_data(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text('group,score,latency\n"LN+,L-",1.5,0.2\nN+,2.5,\n"LN+,L-",3.0,0.4\n')
    ds = datasets.load_csv(f, condition_dim="group", units={"latency": "s"})
    assert ds["score"].dims == ("group", "subject")
    assert ds["group"].values.tolist() == ["LN+,L-", "N+"]
    assert ds["subject"].values.tolist() == [1, 2]  # numbered within group, file order
    np.testing.assert_array_equal(ds["score"].values, [[1.5, 3.0], [2.5, np.nan]])
    assert np.isnan(ds["latency"].sel(group="N+", subject=1))
    assert ds["latency"].attrs["units"] == "s" and ds["score"].attrs["units"] == "not stated"
    assert ds.attrs["source_file"] == str(f)

    with pytest.raises(ValueError, match="one row per condition"):
        datasets.load_csv(f, condition_dim="group", unit_dim=None)

    g = tmp_path / "cells.csv"
    g.write_text("block,cue,rate\n1,a,0.1\n1,b,0.2\n2,a,0.3\n2,b,0.4\n")
    ds2 = datasets.load_csv(g, condition_dim=["block", "cue"], unit_dim=None)
    assert ds2["rate"].dims == ("block", "cue")
    assert ds2["rate"].sel(block="2", cue="b") == 0.4


@pytest.mark.parametrize("text, fragment", [
    ("group,fear\nN+,abc\n", "cannot read 'abc'"),
    ("group,fear\nLN+,L-,3\n", "3 fields"),
    ("cond,fear\nN+,1\n", "no column 'group'"),
    ("group,subject,fear\nN+,1,1\nN+,1,2\n", "duplicate row"),
])
def test_load_csv_bad_input_is_one_line_value_error(tmp_path, text, fragment):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(ValueError) as err:
        datasets.load_csv(f)
    assert fragment in str(err.value) and "\n" not in str(err.value)
