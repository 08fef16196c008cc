"""The plugin contract as a new user meets it: docs/plugins.md runs as printed (its package installs
and runs from the command line), classes are checked at registration, ``simulate``'s output is checked
on every call, and one class reached through ``@register`` and an entry point is one registration."""
import os
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch

import pcneuro
from conftest import ROOT, cli_env, fake_plugin_dist, run_cli
from pcneuro import Hyper, Measure, Paradigm, Preset
from pcneuro.testing import ParadigmContractError, check_paradigm, check_simulate_output, contract_problems, run_quick

PLUGINS_MD = (ROOT / "docs" / "plugins.md").read_text()


def _blocks(lang: str):
    return re.findall(rf"```{lang}\n(.*?)```", PLUGINS_MD, re.S)


# ------------------------------------------------------------------------------------ docs/plugins.md
def test_readme_links_the_plugin_guide():
    assert "(docs/plugins.md)" in (ROOT / "README.md").read_text()


def test_plugin_guide_examples_run(tmp_path, monkeypatch, capsys):
    """Every python block, in order, as one script (later blocks use earlier names); then the
    test functions it defines, as a plugin author's pytest would."""
    script = tmp_path / "plugins_md.py"
    script.write_text("\n\n".join(_blocks("python")))
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out
    assert "blocking" in printed and "control" in printed
    assert "presets lack 'quick' and 'paper'" in printed and "main_measure 'response'" in printed
    tests = [f for name, f in namespace.items() if name.startswith("test_") and callable(f)]
    assert len(tests) == 2
    for test in tests:
        test()
    assert len(list((tmp_path / "kamin_results").glob("*.nc"))) == 1


@pytest.fixture(scope="module")
def kamin_package(tmp_path_factory):
    """The guide's pyproject.toml and module, pip-installed into a private folder."""
    src = tmp_path_factory.mktemp("kamin_src")
    (src / "pyproject.toml").write_text(_blocks("toml")[0])
    (src / "pcneuro_kamin").mkdir()
    (src / "pcneuro_kamin" / "__init__.py").write_text(_blocks("python")[0])
    target = tmp_path_factory.mktemp("kamin_site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True, text=True)
    return target


def test_plugin_guide_package_runs_from_the_command_line(kamin_package, tmp_path):
    ran = run_cli("kamin_blocking", "--preset", "quick", "--quiet", "--out", tmp_path / "out",
                  extra_path=kamin_package)
    # stderr empty: @register in the plugin's module plus its entry point is no conflict
    assert ran.returncode == 0 and ran.stderr == "", ran.stderr
    assert len(list((tmp_path / "out").glob("*.nc"))) == 1  # --out without .nc: a folder


def test_same_class_by_register_and_entry_point_is_not_a_conflict(kamin_package):
    code = ("import warnings\nwarnings.simplefilter('error')\n"
            "import pcneuro_kamin, pcneuro\n"  # the module (and its @register) first, then discovery
            "assert pcneuro.paradigm_class('kamin_blocking') is pcneuro_kamin.KaminBlocking\n"
            "print(pcneuro.list_paradigms(tag='demo'))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(kamin_package))
    assert res.returncode == 0, res.stderr
    assert "kamin_blocking" in res.stdout


def test_a_different_class_under_a_plugin_name_is_named_in_one_warning(plugin_path):
    code = ("import warnings, pcneuro\n"
            "from pcneuro_tiny_plugin import TinyPlugin\n"
            "class Mine(TinyPlugin):\n    pass\n"
            "pcneuro.register(Mine)\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    pcneuro.list_paradigms()\n"
            "print(pcneuro.paradigm_class('tiny_plugin').__name__)\n"
            "print(' | '.join(str(w.message) for w in caught))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(plugin_path))
    assert res.returncode == 0, res.stderr
    used, message = res.stdout.splitlines()
    assert used == "Mine"
    assert "pcneuro_tiny_plugin:TinyPlugin" in message and "using __main__.Mine" in message


# ------------------------------------------------------------------------------- the class contract
@pytest.mark.parametrize("name", ["fear_conditioning", "sensorimotor_adaptation", "reversal_learning"])
def test_builtins_keep_the_contract(name):
    """The class, and its quick preset end to end: progress ticks, runs independent of batch-mates."""
    assert contract_problems(pcneuro.paradigm_class(name)) == []
    run_quick(name)


def test_the_test_plugin_keeps_the_contract():
    sys.path.insert(0, str(ROOT / "tests" / "plugin_pkg"))
    try:
        from pcneuro_tiny_plugin import TinyPlugin
    finally:
        sys.path.pop(0)
    assert check_paradigm(TinyPlugin) is TinyPlugin


class _Good(Paradigm):
    name = "contract_good"
    hyperparameters = {"lr": Hyper(0.1, "rate", min=0.0), "n": Hyper(3, "trials", type=int, min=1, structural=True)}
    grid = {"lr": (0.1, 0.2)}
    presets = {"quick": Preset(seeds=2), "paper": Preset(seeds=10)}
    measures = {"out": Measure(("trial",), "output"), "hits": Measure((), "events", "events")}
    main_measure = "out"
    summary_isel = {"trial": -1}
    figure_x = "trial"

    def coords(self, settings):
        return {"trial": list(range(settings["n"]))}

    def n_progress_steps(self, settings):
        return settings["n"]

    def simulate(self, rule, settings, seeds, device, progress):
        lr = torch.tensor([s["lr"] for s in settings], dtype=torch.float64)
        out = torch.stack([torch.rand(settings[0]["n"], generator=self.generator(s, "x"), dtype=torch.float64)
                           for s in seeds]) * lr[:, None]
        progress(settings[0]["n"])
        return {"out": out, "hits": (out > 0.05).sum(1).numpy()}  # a tensor and an int array: both fine


def _variant(**attrs):
    return type("Variant", (_Good,), {"name": "contract_variant", **attrs})


def test_a_good_class_passes_and_runs_quick():
    assert contract_problems(_Good) == []
    ds = run_quick(_Good)  # registers it
    assert pcneuro.paradigm_class("contract_good") is _Good
    assert ds["out"].dtype == np.float64 and ds["hits"].dtype.kind == "i"


def test_every_problem_is_listed_in_one_line():
    bad = _variant(presets={}, main_measure="output", tags="demo", figure_x="time",
                   measures={"out": Measure("trial", "output"), "hits": Measure((), "events")})
    with pytest.raises(ParadigmContractError) as info:
        check_paradigm(bad)
    message = str(info.value)
    assert "\n" not in message and message.startswith("paradigm 'contract_variant'")
    for needle in ("presets lack 'quick' and 'paper'", "tags must be a tuple", "dims must be a tuple of dim names"):
        assert needle in message, needle
    assert len(info.value.problems) == 3


@pytest.mark.parametrize("attrs, needle", [
    ({"presets": {"quick": Preset(seeds=2)}}, "presets lack 'paper'"),
    ({"main_measure": "output"}, "main_measure 'output' is not one of the measures"),
    ({"figure_x": "time"}, "figure_x 'time' is not a dim of 'out'"),
    ({"summary_isel": {"step": -1}}, "summary_isel {'step': -1}"),
    ({"grid": {"lr": (0.1, -1.0)}}, "lr=-1.0 is below the minimum"),
    ({"grid": {"rate": (0.1,)}}, "axis 'rate' is not a hyperparameter"),
    ({"presets": {"quick": Preset(settings={"n": 0}), "paper": Preset()}}, "presets['quick'].settings: n=0"),
    ({"figure_point": {"lr": "fast"}}, "figure_point: lr='fast'"),
    ({"rules": "pc"}, "rules must be a non-empty tuple"),
    ({"rules": ("pc", "all")}, "'all' is reserved"),
    ({"name": "my task"}, "name must be"),
    ({"dtype": "float16"}, "dtype must be"),
    ({"measures": {"out": Measure(("trial",), "o"), "lr": Measure((), "x")}, "main_measure": "out"},
     "measures ['lr'] are named like a hyperparameter"),
    ({"measures": {"out": Measure(("seed",), "o")}}, "clash with 'rule', 'seed'"),
    ({"grid": {"n": (2, 3)}}, "grid axis n=3 changes the paradigm's dims"),
    ({"coords": lambda self, s: {"trial": list(range(s["n"])), "tria": [0]}}, "coords(settings) gives ['tria']"),
    ({"fit": pcneuro.FitSpec(measure="outs", conditions=())}, "fit.measure 'outs' is not one of the measures"),
    ({"fit": pcneuro.FitSpec(measure="out", conditions=("group",))}, "fit.conditions ['group'] are not dims"),
    ({"fit": pcneuro.FitSpec(measure="out", conditions=())}, "dims ['trial'] of 'out' are neither conditions"),
    ({"fit": pcneuro.FitSpec(measure="out", conditions=("trial",), dataset="my_rats")},
     "dataset 'my_rats' is not packaged"),
    ({"simulate": Paradigm.simulate}, "simulate(rule, settings, seeds, device, progress) is not implemented"),
])
def test_each_breach_is_named(attrs, needle):
    problems = contract_problems(_variant(**attrs))
    assert any(needle in p for p in problems), problems


def test_register_checks_the_class():
    with pytest.raises(ParadigmContractError, match="presets lack 'quick' and 'paper'"):
        pcneuro.register(_variant(name="contract_unregistered", presets={}))
    with pytest.raises(pcneuro.UnknownParadigmError):
        pcneuro.paradigm_class("contract_unregistered")


def test_an_entry_point_plugin_breaking_the_contract_warns_and_fails_in_one_line(tmp_path):
    (tmp_path / "half_plugin.py").write_text(
        "from pcneuro_tiny_plugin import TinyPlugin\n"
        "class Half(TinyPlugin):\n    name = 'half'\n    presets = {}\n")
    fake_plugin_dist(tmp_path, "half-plugin", "half = half_plugin:Half")
    code = ("import contextlib, io, warnings\n"
            "from pcneuro.cli import main\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    assert main(['--list']) == 0\n"
            "print('WARNED', ' | '.join(str(w.message) for w in caught))\n"
            "err = io.StringIO()\n"
            "with contextlib.redirect_stderr(err):\n"
            "    print('STATUS', main(['half', '--quiet']))\n"
            "print('ERROR', err.getvalue().count(chr(10)), err.getvalue().strip())\n")
    extra = os.pathsep.join([str(tmp_path), str(ROOT / "tests" / "plugin_pkg")])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(extra))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    listed = lines[:-3]
    assert any(l.startswith("fear_conditioning") for l in listed) and not any(l.startswith("half") for l in listed)
    assert "'half'" in lines[-3] and "presets lack 'quick' and 'paper'" in lines[-3]  # a warning, not a crash
    assert lines[-2] == "STATUS 2"
    assert lines[-1].startswith("ERROR 1 run_paradigm.py: error: paradigm 'half'") and "presets lack" in lines[-1]


# ------------------------------------------------------------------------------ simulate's output
SETTINGS = [{"lr": 0.1, "n": 3}] * 2


@pytest.mark.parametrize("out, needle", [
    ({"out": np.zeros((2, 4)), "hits": np.zeros(2, int)}, "measure 'out' with shape (2, 4), expected (2, 3) for dims (runs, trial)"),
    ({"out": np.zeros((3, 2)).T, "hits": np.zeros((2, 1), int)}, "measure 'hits' with shape (2, 1), expected (2) for dims (runs)"),
    ({"out": np.zeros((2, 3), np.float32), "hits": np.zeros(2, int)}, "measure 'out' as float32, expected float64"),
    ({"out": torch.zeros(2, 3, dtype=torch.float16), "hits": np.zeros(2, int)}, "as float16, expected float64"),
    ({"out": np.zeros((2, 3))}, "did not return 'hits'"),
    ({"out": np.zeros((2, 3)), "hits": np.zeros(2, int), "extra": np.zeros(2)}, "returned undeclared 'extra'"),
    ({"out": [["a"] * 3] * 2, "hits": np.zeros(2, int)}, "measure 'out' as <U1"),
    ([np.zeros((2, 3))], "simulate returned list, expected a dict"),
])
def test_a_bad_output_is_one_line_naming_paradigm_measure_expected_and_actual(out, needle):
    with pytest.raises(ValueError) as info:
        check_simulate_output(_Good(), out, SETTINGS)
    message = str(info.value)
    assert "\n" not in message and message.startswith("paradigm 'contract_good'") and needle in message, message


def test_non_finite_values_pass_and_tensors_become_arrays():
    out = {"out": torch.tensor([[np.nan, np.inf, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64),
           "hits": np.array([True, False])}
    checked = check_simulate_output(_Good(), out, SETTINGS)
    assert isinstance(checked["out"], np.ndarray) and np.isnan(checked["out"][0, 0])


def test_the_runner_checks_every_call():
    bad = _variant(name="contract_float32",
                   simulate=lambda self, rule, settings, seeds, device, progress:
                   {"out": np.zeros((len(settings), settings[0]["n"]), np.float32), "hits": np.zeros(len(settings))})
    pcneuro.register(bad)
    with pytest.raises(ValueError, match="paradigm 'contract_float32': simulate returned measure 'out' as float32"):
        pcneuro.run("contract_float32", seeds=1, write=False)


def test_run_quick_catches_shared_random_streams_and_miscounted_progress():
    def shared_stream(self, rule, settings, seeds, device, progress):
        progress(settings[0]["n"])
        gen = torch.Generator().manual_seed(0)  # one stream for the whole call: runs depend on batch-mates
        return {"out": torch.rand(len(settings), settings[0]["n"], generator=gen, dtype=torch.float64),
                "hits": np.zeros(len(settings), int)}

    def no_progress(self, rule, settings, seeds, device, progress):
        return _Good.simulate(self, rule, settings, seeds, device, lambda n: None)

    with pytest.raises(AssertionError, match="differs when simulated alone"):
        run_quick(_variant(name="contract_shared", simulate=shared_stream))
    with pytest.raises(AssertionError, match="reported 0 progress ticks, expected n_progress_steps"):
        run_quick(_variant(name="contract_silent", simulate=no_progress))
    pcneuro.register(_variant(name="contract_taken"))
    with pytest.raises(ValueError, match="registered to"):
        run_quick(_variant(name="contract_taken"))
