"""Recorded data files and loaders (specs/behaviour.md §0.3, §1.4, §2.4, §2.7 item 6, §3.4)."""
import csv
import json
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

# specs/behaviour.md §2.4, the 96 (x, y) points as text, in the spec's order.
COIN_POINTS = [
    ("0.22080713446896594", "0.43893017632503795"),
    ("0.8531202468290524", "0.39274939657750035"),
    ("1.9123444859966976", "0.26056498546152623"),
    ("3.0424714105569675", "0.201139677683551"),
    ("-0.11640312523021112", "0.3714387239076645"),
    ("0.14175337028257884", "0.3439451914701843"),
    ("-0.020462197801245807", "0.3411787647280591"),
    ("0.03718035941014053", "0.32706322827787343"),
    ("0.033150320453097404", "0.318307210303033"),
    ("-0.017251166761278913", "0.3075101725983352"),
    ("-0.19848591869721455", "0.31955002231688245"),
    ("0.15613150927125607", "0.28873279108364724"),
    ("-0.20298396217830117", "0.2865513699965767"),
    ("-0.15698951756533663", "0.2690636009481425"),
    ("-0.19645789909302458", "0.2246014378138989"),
    ("-0.24306334961237974", "0.21043910091130885"),
    ("0.12779123531527414", "0.22070660016380161"),
    ("0.10038697040738054", "0.20116567793488677"),
    ("0.09235289274462977", "0.18500045500439843"),
    ("-0.04258841168798", "0.19504088539522552"),
    ("0.12671222488484002", "0.16481385986731206"),
    ("0.07606373528277466", "0.14122209848028533"),
    ("0.049101474647588184", "0.1445769975776433"),
    ("-0.08973986748538554", "0.15259547508959254"),
    ("-0.26820559265406274", "0.10807091135214308"),
    ("0.21768710430867522", "0.07731261402193557"),
    ("0.12844124159866865", "0.05437692564361457"),
    ("-0.11992615928620642", "-0.0110544401929219"),
    ("0.9212279052030836", "0.3207261003523035"),
    ("1.1061936932057006", "0.3019539188878827"),
    ("1.1213128393574467", "0.2851256895483324"),
    ("1.0054817196566233", "0.2850736890456609"),
    ("0.8545502606525193", "0.26682411263308886"),
    ("0.8503382199361256", "0.24864040352390082"),
    ("1.1671512824623957", "0.2595570423847431"),
    ("1.192761530028124", "0.18616786628937415"),
    ("1.0694033375655958", "0.19621349673046845"),
    ("0.8724514336971922", "0.19410487634713813"),
    ("0.8446311647679257", "0.1530149458111429"),
    ("0.8794845016835162", "0.15841779803871442"),
    ("1.0841584801986417", "0.16052988512222288"),
    ("0.8056567880156167", "0.13414223004155712"),
    ("0.8476731941742099", "0.11059206905666757"),
    ("1.0294409512625289", "0.126161886231567"),
    ("1.071756360311483", "0.11810007496739133"),
    ("1.0676873209774356", "0.10732383746376217"),
    ("0.9857085285157754", "0.0608223879497502"),
    ("0.8387941083430479", "0.05065542300242237"),
    ("1.135495976461106", "0.019812191517851407"),
    ("1.0117477802285424", "0.009655626671057793"),
    ("2.1941222098480284", "0.25665108096044936"),
    ("2.0967252683442594", "0.2114895110652737"),
    ("1.7872962771973468", "0.18306776965510674"),
    ("1.806549463311478", "0.18038281036716697"),
    ("2.01873751446264", "0.17172385999731338"),
    ("2.034051662499404", "0.16499672830170697"),
    ("2.214987411544979", "0.13746852886244576"),
    ("2.2105023681895584", "0.1051432830517362"),
    ("1.774803156430512", "0.1359241139331014"),
    ("1.7937443395286157", "0.11707739841485143"),
    ("1.836202749959916", "0.11642305875623465"),
    ("1.8786611603912164", "0.11576871909761799"),
    ("1.7393128133571962", "0.09752434273531319"),
    ("1.8240476324604464", "0.08678797228373208"),
    ("2.2679889238929314", "0.08294686848639538"),
    ("2.1363886517569672", "0.0660527718434612"),
    ("2.144045725775349", "0.06268920599565808"),
    ("2.2633088786524937", "0.04052052503174208"),
    ("2.2551968002357357", "0.020314863043676135"),
    ("2.2626978727461036", "0.00887041908071784"),
    ("2.270185945130802", "-0.003247431391836808"),
    ("2.258407831275701", "-0.013353729086047816"),
    ("2.184931121000836", "-0.019447321324106204"),
    ("2.026927593633405", "-0.004030038957043236"),
    ("1.8494758782668232", "0.003971105054015656"),
    ("3.187929816654894", "0.13588511355609778"),
    ("3.1029089947869495", "0.13180654079656112"),
    ("3.1104620677999884", "0.12305572287198785"),
    ("3.12935125039542", "0.10151538131535276"),
    ("3.1333552891011274", "0.10892458627100071"),
    ("2.944099459628109", "0.10547261956865589"),
    ("2.9472844904167403", "0.07045721441973946"),
    ("3.1673766179739737", "0.07122942188441161"),
    ("3.001508014577474", "0.07923576594573756"),
    ("3.005031048633471", "0.06172893004632385"),
    ("3.143638388504422", "0.04158913536164188"),
    ("3.1282852400906536", "0.046296047528459505"),
    ("2.8848188865825697", "0.03473893580971288"),
    ("2.888796925036942", "0.04080132774616829"),
    ("2.9195682224928166", "0.03475453596051431"),
    ("3.162306568963499", "0.008600883141870408"),
    ("3.0772337465928836", "0.0018286843439487832"),
    ("3.1542724913007487", "-0.007564339788617924"),
    ("3.099775964500991", "-0.030484428016137488"),
    ("2.940875428462475", "-0.06153219481121641"),
    ("2.9332833550724327", "-0.05480159641543203"),
]
# §2.4: condition index = round(x), -0.0 normalised to 0; stated counts and means.
COIN_CONDITIONS = {0: "1+", 1: "2+", 2: "1-", 3: "2-"}
COIN_STATED = {
    "1+": (25, 0.22724559404074246),
    "2+": (23, 0.1802767368780218),
    "1-": (26, 0.09947236156616185),
    "2-": (22, 0.05657627114637871),
}
# §3.4, in the spec's row order.
REVERSAL_CELLS = [
    ("punish", "stay", "0.07656332326255083"),
    ("next", "switch", "0.030083598201063405"),
    ("punish", "switch", "-0.05977541312190382"),
    ("next", "stay", "-0.1794935997796775"),
]


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


# --------------------------------------------------------------------------- new datasets

def _read_rows(name):
    with datasets.path(name).open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        return next(reader), list(reader)


def test_available_lists_the_three_packaged_datasets():
    assert datasets.available() == ["fear_conditioning", "reversal_learning", "sensorimotor_adaptation"]


def test_coin_file_holds_every_spec_digit_in_order():
    header, rows = _read_rows("sensorimotor_adaptation")
    assert header == ["exposure", "x", "adaptation"]
    assert len(COIN_POINTS) == 96
    assert [(r[1], r[2]) for r in rows] == COIN_POINTS  # text, digit for digit, spec order


def test_coin_exposure_is_round_x_with_minus_zero_normalised():
    _, rows = _read_rows("sensorimotor_adaptation")
    raw = [np.round(np.float64(x)) for x, _ in COIN_POINTS]  # float rounding keeps the sign of zero
    # Unnormalised, -0.0 is a fifth key once written out (the reference's empty strip-plot tick).
    assert sorted({str(r) for r in raw}) == ["-0.0", "0.0", "1.0", "2.0", "3.0"]
    assert sum(str(r) == "-0.0" for r in raw) == sum(float(x) < 0 for x, _ in COIN_POINTS) == 12
    normalised = [r + 0.0 for r in raw]  # -0.0 + 0.0 == +0.0
    assert sorted({str(r) for r in normalised}) == ["0.0", "1.0", "2.0", "3.0"]
    expected = [COIN_CONDITIONS[int(r)] for r in normalised]
    assert [r[0] for r in rows] == expected
    assert all(r[0] == "1+" for r in rows if float(r[1]) < 0)
    assert [r[0] for r in rows[:4]] == ["1+", "2+", "1-", "2-"]  # the first 4 rows fix the order
    ds = datasets.load_behaviour("sensorimotor_adaptation")
    assert list(dict.fromkeys(ds["exposure"].values.tolist())) == ["1+", "2+", "1-", "2-"]


def test_coin_stated_counts_and_means_recomputed_in_file_order():
    _, rows = _read_rows("sensorimotor_adaptation")
    for label, (count, stated) in COIN_STATED.items():
        total, n = np.float64(0.0), 0
        for row in rows:
            if row[0] == label:
                total = total + np.float64(row[2])
                n += 1
        assert n == count, label
        assert math.isclose(float(total / n), stated, rel_tol=1e-12, abs_tol=0.0), label


def test_reversal_file_holds_the_four_cells_exactly():
    header, rows = _read_rows("reversal_learning")
    assert header == ["at", "choice", "value"]
    assert [tuple(r) for r in rows] == REVERSAL_CELLS
    ds = datasets.load_behaviour("reversal_learning")
    got = list(zip(ds["at"].values.tolist(), ds["choice"].values.tolist(), ds["value"].values.tolist()))
    assert got == [(a, c, float(v)) for a, c, v in REVERSAL_CELLS]  # exact, no tolerance
    wide = datasets.load("reversal_learning")["value"]
    assert wide.dims == ("at", "choice")
    for a, c, v in REVERSAL_CELLS:
        assert float(wide.sel(at=a, choice=c)) == float(v)


@pytest.mark.parametrize("name, conditions, measure, n, subject", [
    ("fear_conditioning", ["group"], "fear_to_N", 15, True),
    ("sensorimotor_adaptation", ["exposure"], "adaptation", 96, False),
    ("reversal_learning", ["at", "choice"], "value", 4, False),
])
def test_load_behaviour_long_format(name, conditions, measure, n, subject):
    ds = datasets.load_behaviour(name)
    assert dict(ds.sizes) == {"point": n}
    value = ds["value"]
    assert value.dims == ("point",) and value.dtype == np.float64
    assert value.attrs["long_name"] and value.attrs["units"] == "not stated"
    assert json.loads(ds.attrs["condition_dims"]) == conditions
    assert ds.attrs["measure"] == measure and ds.attrs["name"] == name
    for dim in conditions:
        assert ds[dim].dims == ("point",) and ds[dim].dtype.kind == "U"
    assert ("subject" in ds.coords) == subject
    header, rows = _read_rows(name)
    column = header.index(measure)
    assert value.values.tolist() == [float(r[column]) for r in rows]  # file order, verbatim
    for dim in conditions:
        assert ds[dim].values.tolist() == [r[header.index(dim)] for r in rows]
    for key in ("source", "figure_panel", "original_experiment", "method", "caveats"):
        assert ds.attrs[key]
    assert "[inferred]" in ds.attrs["original_experiment"] and "digitised" in ds.attrs["method"]
    assert ds.attrs["data_file"] == f"pcneuro.datasets/{name}.csv"


def test_fear_long_format_matches_wide():
    long = datasets.load_behaviour("fear_conditioning")
    wide = datasets.load("fear_conditioning")["fear_to_N"]
    assert long["subject"].values.tolist() == [1, 2, 3, 4, 5] * 3
    for g, s, v in zip(long["group"].values, long["subject"].values, long["value"].values):
        assert float(wide.sel(group=g, subject=s)) == v
    means = long["value"].groupby("group").mean()
    for group, stated in FEAR_STATED_MEANS.items():
        assert math.isclose(float(means.sel(group=group)), stated, rel_tol=1e-12)


@pytest.mark.parametrize("name, panel, original", [
    ("sensorimotor_adaptation", "Fig. 5f", "Heald, Lengyel, Flanagan & Wolpert (2021)"),
    ("reversal_learning", "Fig. 6c", "Hampton, Bossaerts & O'Doherty (2006)"),
])
def test_new_sidecars_provenance(name, panel, original):
    attrs = datasets.load_behaviour(name).attrs
    assert attrs["figure_panel"] == panel
    assert attrs["original_experiment"].startswith(original)
    assert "Song" in attrs["source"] and "(2024)" in attrs["source"]
    assert "as hard-coded in the reference code" in attrs["method"]


def test_coin_caveats_and_wide_shape():
    attrs = datasets.load_behaviour("sensorimotor_adaptation").attrs
    assert "25/23/26/22" in attrs["caveats"] and "about 24 participants" in attrs["caveats"]
    assert "never a fifth condition" in attrs["caveats"]
    wide = datasets.load("sensorimotor_adaptation")["adaptation"]
    assert wide.dims == ("exposure", "index") and wide.sizes["index"] == 26
    assert wide.notnull().sum("index").values.tolist() == [25, 23, 26, 22]


@pytest.mark.parametrize("name", datasets.available())
def test_packaged_round_trips_through_the_user_format(name, tmp_path):
    ds = datasets.load_behaviour(name)
    f = tmp_path / f"{name}.csv"
    ds.to_dataframe().to_csv(f, index=False)  # a CSV writer quotes "LN+,L-"
    conditions = json.loads(ds.attrs["condition_dims"])
    labels = {d: sorted(set(ds[d].values.tolist())) for d in conditions}
    back = datasets.read_behaviour_csv(f, conditions=conditions, labels=labels)
    assert back["value"].values.tolist() == ds["value"].values.tolist()
    for d in conditions:
        assert back[d].values.tolist() == ds[d].values.tolist()


# --------------------------------------------------------------------------- user data

def test_read_behaviour_csv_good_file(tmp_path):
    f = tmp_path / "rats.csv"
    f.write_text('group,subject,fear_to_N\nN+,r1,51.5\n"LN+,L-",r2,49\n\nLN+,r3,2.5e1\n')
    ds = datasets.read_behaviour_csv(f, conditions=["group"], value="fear_to_N",
                                     labels={"group": ["N+", "LN+", "LN+,L-"]})
    assert dict(ds.sizes) == {"point": 3}  # the blank line is not a row
    assert ds["value"].values.tolist() == [51.5, 49.0, 25.0]
    assert ds["value"].dtype == np.float64 and ds["value"].attrs["units"] == "not stated"
    assert ds["group"].values.tolist() == ["N+", "LN+,L-", "LN+"]
    assert ds["subject"].values.tolist() == ["r1", "r2", "r3"]
    assert ds.attrs["measure"] == "fear_to_N" and ds.attrs["name"] == "rats"
    assert json.loads(ds.attrs["condition_dims"]) == ["group"]
    assert ds.attrs["source_file"] == str(f)


def test_read_behaviour_csv_subject_optional_and_value_column_named_value(tmp_path):
    f = tmp_path / "cells.csv"
    f.write_text("at,choice,value\npunish,stay,0.1\nnext,stay,-0.2\nnext,stay,-0.3\n")
    ds = datasets.read_behaviour_csv(f, value="value")
    assert "subject" not in ds.coords
    assert json.loads(ds.attrs["condition_dims"]) == ["at", "choice"]  # inferred: non-numeric columns
    assert ds["value"].values.tolist() == [0.1, -0.2, -0.3]  # repeated cells are points, all kept
    same = datasets.read_behaviour_csv(f, conditions=["at", "choice"], value="some_measure")
    assert same.attrs["measure"] == "some_measure" and same.attrs["value_column"] == "value"


def test_read_behaviour_csv_keeps_labels_pandas_would_read_as_missing(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text("cond,value\nNA,1\n-,2\nnull,3\n1-,4\n")
    ds = datasets.read_behaviour_csv(f)
    assert ds["cond"].values.tolist() == ["NA", "-", "null", "1-"]


def test_read_behaviour_csv_keeps_extra_columns(tmp_path):
    f = tmp_path / "extra.csv"
    f.write_text("exposure,x,adaptation,note\n1+,0.1,0.3,a\n2-,2.9,0.0,b\n")
    ds = datasets.read_behaviour_csv(f, conditions="exposure", value="adaptation")
    assert ds["x"].values.tolist() == [0.1, 2.9] and ds["x"].dims == ("point",)
    assert ds["note"].values.tolist() == ["a", "b"]
    assert json.loads(ds.attrs["condition_dims"]) == ["exposure"]


def test_read_behaviour_csv_labels_validation(tmp_path):
    f = tmp_path / "coin.csv"
    f.write_text("exposure,adaptation\n1+,0.2\n3+,0.1\n")
    allowed = {"exposure": ["1+", "2+", "1-", "2-"]}
    with pytest.raises(ValueError) as err:
        datasets.read_behaviour_csv(f, value="adaptation", labels=allowed)
    msg = str(err.value)
    assert "\n" not in msg and str(f) in msg and ":3:" in msg
    assert "'3+'" in msg and "'1+', '2+', '1-', '2-'" in msg
    with pytest.raises(ValueError, match="not a condition column"):
        datasets.read_behaviour_csv(f, conditions=["exposure"], value="adaptation", labels={"group": ["N+"]})


@pytest.mark.parametrize("text, kwargs, fragments", [
    ("group,value\nN+,1\nN+,abc\n", {}, [":3:", "'abc'", "not a finite number"]),
    ("group,value\nN+,inf\n", {}, [":2:", "'inf'"]),
    ("group,value\nN+,nan\n", {}, [":2:", "'nan'"]),
    ("group,subject,value\nN+,1,2\nN+,1\n", {}, [":3:", "'value'", "empty cell"]),
    ("group,value\nLN+,L-,3\n", {}, [":2:", "3 fields", "header has 2"]),
    ("cond,value\nN+,1\n", {"conditions": ["group"]},
     ["no column 'group'", "columns found: 'cond', 'value'", "expected: 'group', 'value'"]),
    ("group,score\nN+,1\n", {"conditions": ["group"], "value": "fear_to_N"},
     ["no value column 'fear_to_N' or 'value'", "columns found: 'group', 'score'"]),
    ("group,value,value\nN+,1,2\n", {}, ["duplicate column", "'value'"]),
    ("group,value\n", {}, ["no data rows"]),
    ("", {}, ["empty file"]),
    ("group,value\n,1\n", {}, [":2:", "empty 'group' label"]),
    ("group,subject,value\nN+,1,1\nN+,1,2\n", {}, [":3:", "group='N+'", "subject='1'"]),
    ("group,value\nN+,1\nX+,2\n", {"labels": {"group": ["N+", "LN+"]}}, [":3:", "'X+'", "allowed: 'N+', 'LN+'"]),
    ("block,value\n1,2\n", {}, ["no condition column", "pass conditions="]),
    ("group,fear_to_N,value\nN+,1,2\n", {"value": "fear_to_N"}, ["both 'fear_to_N' and 'value'"]),
])
def test_read_behaviour_csv_bad_input_is_one_line_value_error(tmp_path, text, kwargs, fragments):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(ValueError) as err:
        datasets.read_behaviour_csv(f, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(f)), msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_read_behaviour_csv_missing_file(tmp_path):
    missing = tmp_path / "none.csv"
    with pytest.raises(FileNotFoundError) as err:
        datasets.read_behaviour_csv(missing)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
