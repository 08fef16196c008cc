import subprocess
import sys
import warnings

import numpy as np
import pytest

import pcneuro
from conftest import cli_env, fake_plugin_dist, run_cli


def test_builtins_are_listed_and_filtered_by_tag():
    assert "fear_conditioning" in pcneuro.list_paradigms()
    assert "fear_conditioning" in pcneuro.list_paradigms(tag="behaviour")
    assert "fear_conditioning" not in pcneuro.list_paradigms(tag="benchmark")


def test_make_applies_and_validates_overrides():
    p = pcneuro.make("fear_conditioning", lr_mix_N=0.1, n_hidden=4)
    assert p.settings["lr_mix_N"] == 0.1 and p.settings["n_hidden"] == 4
    with pytest.raises(ValueError, match="lr_mix_N=-1"):
        pcneuro.make("fear_conditioning", lr_mix_N=-1)
    with pytest.raises(ValueError, match="unknown hyperparameter 'lr_mixN'.*lr_mix_N"):
        pcneuro.make("fear_conditioning", lr_mixN=0.1)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(pcneuro.UnknownParadigmError, match="did you mean fear_conditioning"):
        pcneuro.make("fear_conditionin")


def _demo_class(name="registry_demo", qualname="Demo"):
    class Demo(pcneuro.Paradigm):
        tags = ("demo",)
        presets = {"quick": pcneuro.Preset(seeds=1), "paper": pcneuro.Preset(seeds=4)}
        measures = {"out": pcneuro.Measure((), "output")}
        main_measure = "out"

        def simulate(self, rule, settings, seeds, device, progress):
            return {"out": np.zeros(len(settings))}

    Demo.name, Demo.__qualname__ = name, qualname
    return Demo


def test_register_a_class_in_process():
    Demo = _demo_class()
    pcneuro.register(Demo)
    assert pcneuro.paradigm_class("registry_demo") is Demo
    assert "registry_demo" in pcneuro.list_paradigms(tag="demo")
    with pytest.raises(TypeError):
        pcneuro.register(int)


def test_registering_a_name_twice_says_which_class_is_used():
    first, again, other = _demo_class("registry_twice"), _demo_class("registry_twice"), _demo_class("registry_twice", "Other")
    pcneuro.register(first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pcneuro.register(again)  # the same class defined again (a re-run notebook cell): quiet
    with pytest.warns(UserWarning, match=r"registered twice \(.*\.Demo and .*\.Other\); using the later one"):
        pcneuro.register(other)
    assert pcneuro.paradigm_class("registry_twice") is other


def test_entry_point_plugin_is_found_and_runs(plugin_path, tmp_path):
    listed = run_cli("--list", extra_path=plugin_path)
    assert listed.returncode == 0, listed.stderr
    assert "tiny_plugin" in listed.stdout and "fear_conditioning" in listed.stdout
    out = tmp_path / "plugin.nc"
    ran = run_cli("tiny_plugin", "--out", out, "--quiet", extra_path=plugin_path)
    assert ran.returncode == 0, ran.stderr
    import xarray as xr

    with xr.open_dataset(out) as ds:
        assert ds.attrs["paradigm"] == "tiny_plugin"
        assert ds["output"].dims == ("rule", "seed", "lr", "trial")
        # every run learns towards the target 1 from about 0.25
        assert bool((ds["output"].isel(trial=-1) > ds["output"].isel(trial=0)).all())
        assert float(ds["output"].max()) < 1.0


def test_broken_plugin_is_a_warning_not_a_crash(tmp_path):
    fake_plugin_dist(tmp_path, "broken-plugin", "broken = no_such_module_xyz:Thing")
    code = ("import warnings, pcneuro\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    names = pcneuro.list_paradigms()\n"
            "print(names)\nprint([str(x.message) for x in w])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "fear_conditioning" in res.stdout and "'broken'" not in res.stdout.splitlines()[0]
    assert "broken" in res.stdout.splitlines()[1] and "failed to load" in res.stdout
