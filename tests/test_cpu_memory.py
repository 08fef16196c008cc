"""pcneuro.cpu_memory: freed big blocks stay in the heap, so a fresh stacked tensor of that size does
not page-fault again (glibc only), and PCNEURO_MALLOPT=0 leaves glibc's defaults alone."""
import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's mallopt only")

ALLOCATE = """
import json, resource
import torch
from pcneuro.cpu_memory import keep_freed_memory
applied = keep_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(16 << 20); del x  # 64 MiB: above glibc's largest mmap threshold (32 MiB)
before = faults()
for _ in range(5):
    x = torch.ones(16 << 20); del x
print(json.dumps({"applied": applied, "again": keep_freed_memory(), "faults": faults() - before}))
"""
PAGES = (64 << 20) // os.sysconf("SC_PAGE_SIZE")  # one 64 MiB block's pages


def _run(env_value):
    env = dict(os.environ)
    env.pop("PCNEURO_MALLOPT", None)
    if env_value is not None:
        env["PCNEURO_MALLOPT"] = env_value
    res = subprocess.run([sys.executable, "-c", ALLOCATE], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_freed_big_blocks_are_reused_without_page_faults():
    kept, default = _run(None), _run("0")
    assert kept["applied"] and kept["again"]  # set once, idempotent
    assert not default["applied"] and not default["again"]
    assert default["faults"] >= 4 * PAGES  # every fresh 64 MiB tensor is mapped and zeroed anew
    assert kept["faults"] <= 2 * PAGES, kept  # served from the heap (at most one more growth)


CLI = """
import contextlib, io, json, sys
from pcneuro import cli, cpu_memory
with contextlib.redirect_stdout(io.StringIO()):
    cli.{entry}
print(json.dumps(cpu_memory._applied))
"""


@pytest.mark.parametrize("entry, applied", [("main(['--list'])", None), ("console_main()", True)])
def test_the_command_line_applies_it_and_in_process_main_does_not(entry, applied, monkeypatch):
    monkeypatch.delenv("PCNEURO_MALLOPT", raising=False)
    res = subprocess.run([sys.executable, "-c", CLI.format(entry=entry), "--list"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == applied
    import run_paradigm  # the script runs console_main

    assert run_paradigm.console_main is cli_console_main()


def cli_console_main():
    from pcneuro.cli import console_main

    return console_main
