"""The README's "Write your own paradigm" example runs as printed, and its commands are CI's."""
import re
import runpy

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def _block(after_heading: str, lang: str) -> str:
    section = README.split(after_heading, 1)[1]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def test_write_your_own_paradigm_example_runs(tmp_path, capsys):
    script = tmp_path / "example.py"
    script.write_text(_block("## Write your own paradigm", "python"))
    runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out
    assert "response" in printed
    import pcneuro

    ds = pcneuro.run("acquisition_demo", preset="quick", write=False)
    last, first = ds.response.isel(trial=-1), ds.response.isel(trial=0)
    assert bool((last > first).all())  # every run acquires the response


def test_ci_runs_exactly_the_readme_commands():
    """Besides shell set-up (set, cd, export), .ci/run runs the README's commands, in order, and nothing else."""
    commands = [l.strip() for l in _block("## Set up and test", "bash").splitlines() if l.strip()]
    ci_lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci_commands = [l for l in ci_lines if l and not l.startswith(("#", "set ", "cd ", "export "))]
    assert ci_commands == commands
