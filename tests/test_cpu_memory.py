"""pcneuro.cpu_memory: freed big blocks stay in the heap, so a fresh stacked tensor of that size is not
mapped (and page-faulted) anew (glibc only), and PCNEURO_MALLOPT=0 leaves glibc's defaults alone."""
import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's mallopt only")

ALLOCATE = """
import ctypes, json
import torch
from pcneuro.cpu_memory import keep_freed_memory

class MallInfo2(ctypes.Structure):  # glibc >= 2.33
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory()
x = torch.ones(16 << 20)  # 64 MiB: above glibc's largest mmap threshold (32 MiB)
alive = libc.mallinfo2()
del x
freed = libc.mallinfo2()
print(json.dumps({"applied": applied, "again": keep_freed_memory(), "mmapped_while_alive": alive.hblkhd,
                  "heap_free_after": freed.fordblks}))
"""
BLOCK = 64 << 20


def _run(env_value):
    env = dict(os.environ)
    env.pop("PCNEURO_MALLOPT", None)
    if env_value is not None:
        env["PCNEURO_MALLOPT"] = env_value
    res = subprocess.run([sys.executable, "-c", ALLOCATE], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_freed_big_blocks_stay_in_the_heap():
    """With the thresholds set, a 64 MiB tensor comes from the heap (not a fresh mmap) and its memory
    stays there, free for the next one, after it is freed; with glibc's defaults it is mmapped and
    returned to the system. (Counted in glibc's own books: page-fault counts here also move with the
    kernel's reclaim of idle pages.)"""
    kept, default = _run(None), _run("0")
    assert kept["applied"] and kept["again"]  # set once, idempotent
    assert not default["applied"] and not default["again"]
    assert default["mmapped_while_alive"] >= BLOCK  # a fresh mapping, unmapped again on free
    assert default["heap_free_after"] < BLOCK
    assert kept["mmapped_while_alive"] < BLOCK, kept  # served from the heap
    assert kept["heap_free_after"] >= BLOCK, kept  # and kept there for the next big tensor


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
