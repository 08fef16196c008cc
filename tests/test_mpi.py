"""Whole chunks of runs spread over MPI ranks (pip-installed mpich): same file as one process;
failures end the job. The chunk plan and the dealing are pure functions, tested here without MPI."""
import json
import sys

import numpy as np
import pytest
import xarray as xr

from conftest import find_mpiexec, run_cli
from pcneuro.distributed import deal_chunks
from pcneuro.registry import paradigm_class
from pcneuro.runner import BATCH_OVERHEAD_STEPS, chunk_cost, chunk_plan, make_plan


def test_deal_chunks_gives_each_chunk_to_one_rank_longest_first():
    costs = [5, 4, 3, 3, 3]
    shares = deal_chunks(costs, 2)
    # longest first onto the least-loaded rank: 5->0, 4->1, 3->1 (4 < 5), 3->0 (5 < 7), 3->1 (7 < 8)
    assert shares == [[0, 3], [1, 2, 4]]
    assert sorted(i for share in shares for i in share) == list(range(len(costs)))
    assert deal_chunks(costs, 2) == shares  # deterministic
    assert deal_chunks(costs, 1) == [[0, 1, 2, 3, 4]]
    assert deal_chunks([1.0, 1.0], 4) == [[0], [1], [], []]  # more ranks than chunks: some idle
    assert deal_chunks([], 3) == [[], [], []]
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="ranks"):
            deal_chunks(costs, bad)
    with pytest.raises(ValueError, match="chunk 1"):
        deal_chunks([1.0, float("nan")], 2)


def test_chunk_plan_is_whole_programs_whatever_the_ranks():
    cls = paradigm_class("fear_conditioning")
    plan = make_plan(cls, preset="quick", grid={"n_hidden": [2, 4]})  # 2 rules x 2 n_hidden x 8 points x 2 seeds
    chunks = chunk_plan(cls, plan.runs)
    assert [(c[0].rule, c[0].settings["n_hidden"], len(c)) for c in chunks] == \
        [("pc", 2, 16), ("pc", 4, 16), ("bp", 2, 16), ("bp", 4, 16)]
    for c in chunks:  # one rule and one set of structural settings per chunk, runs in plan order
        assert {(r.rule, r.settings["n_hidden"]) for r in c} == {(c[0].rule, c[0].settings["n_hidden"])}
        assert [r.index for r in c] == sorted(r.index for r in c)
    assert sorted(r.index for c in chunks for r in c) == [r.index for r in plan.runs]
    cut = chunk_plan(cls, plan.runs, max_runs=6)  # cut at the maximum size, in order
    assert [len(c) for c in cut] == [6, 6, 4] * 4
    assert [r.index for c in cut for r in c] == [r.index for c in chunks for r in c]
    with pytest.raises(ValueError, match="max_runs"):
        chunk_plan(cls, plan.runs, max_runs=0)
    paradigm = cls()
    steps = paradigm.n_progress_steps(plan.runs[0].settings)
    extra = BATCH_OVERHEAD_STEPS  # a trial's feed-forward pass, weight update and bookkeeping
    assert chunk_cost(paradigm, chunks[0]) == 16 * steps * (plan.settings["T"] + extra)  # PC: T inference steps
    assert chunk_cost(paradigm, chunks[2]) == 16 * steps * (1 + extra)  # BP: one step per trial


def test_step_cost_weights_the_chunks_so_deep_networks_are_dealt_evenly():
    cls = paradigm_class("deep_fashion_mnist")
    depths = [1, 2, 4, 6, 8, 10, 12, 14, 15]
    plan = make_plan(cls, preset="quick", settings={"T": 16}, grid={"depth": depths}, rule="pc")
    chunks = chunk_plan(cls, plan.runs)
    assert [c[0].settings["depth"] for c in chunks] == depths
    paradigm = cls()
    costs = [chunk_cost(paradigm, c) for c in chunks]
    per_layer = costs[0]  # depth 1: one weight layer
    assert costs == [pytest.approx(per_layer * d) for d in depths]  # cost grows with the weight layers
    shares = deal_chunks(costs, 2)
    loads = [sum(depths[i] for i in share) for share in shares]
    assert abs(loads[0] - loads[1]) <= 2, (shares, loads)  # 36 layers each, give or take one chunk
    # without step_cost every depth would cost the same: the split would be 5 chunks against 4
    # (depths 1+4+8+12+15 = 40 layers against 32)

    class Broken(cls):
        def step_cost(self, settings):
            return float("nan")

    with pytest.raises(ValueError, match="step_cost returned nan"):
        chunk_cost(Broken(), chunks[0])


def test_find_mpiexec_prefers_the_one_beside_python(tmp_path, monkeypatch):
    venv_bin, path_bin = tmp_path / "venv" / "bin", tmp_path / "usr" / "bin"
    for folder in (venv_bin, path_bin):
        folder.mkdir(parents=True)
    (venv_bin / "python").touch()
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(path_bin))
    assert find_mpiexec() is None
    for folder in (path_bin, venv_bin):
        (folder / "mpiexec").write_text("#!/bin/sh\n")
        (folder / "mpiexec").chmod(0o755)
        assert find_mpiexec() == str(folder / "mpiexec")  # PATH's alone, then the venv's first


def test_two_ranks_share_whole_chunks_and_write_the_one_process_file(tmp_path):
    one, two = tmp_path / "one.nc", tmp_path / "two.nc"
    args = ["fear_conditioning", "--preset", "quick", "--seeds", "3", "--grid", "n_hidden=2,4,6", "--quiet",
            "--no-figure"]
    r1 = run_cli(*args, "--out", one)
    r2 = run_cli(*args, "--out", two, mpi_ranks=2)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.count("wrote ") == 1  # only rank 0 writes and reports
    with xr.open_dataset(one) as a, xr.open_dataset(two) as b:
        assert a.attrs["mpi_size"] == 1 and b.attrs["mpi_size"] == 2
        assert len(json.loads(a.attrs["devices"])) == 1 and len(json.loads(b.attrs["devices"])) == 2
        plan = json.loads(b.attrs["chunk_plan"])
        assert plan == json.loads(a.attrs["chunk_plan"])  # the same programs whatever the ranks
        assert len(plan) == 6  # 2 rules x 3 n_hidden
        assigned = json.loads(b.attrs["chunks_per_rank"])
        ran = json.loads(b.attrs["chunks_simulated"])  # counted by each rank as it simulated
        assert ran == assigned and all(ran)  # both ranks worked, each on what it was dealt
        assert sorted(i for share in ran for i in share) == list(range(len(plan)))  # each chunk once
        assert json.loads(a.attrs["chunks_simulated"]) == [list(range(len(plan)))]
        assert set(a.data_vars) == set(b.data_vars)
        for name in a.data_vars:
            assert a[name].dims == b[name].dims
            np.testing.assert_array_equal(a[name].values, b[name].values)
        for coord in a.coords:
            np.testing.assert_array_equal(a[coord].values, b[coord].values)
        assert a.attrs["config"] == b.attrs["config"]


def test_a_failing_rank_ends_the_job_with_its_message(plugin_path, tmp_path):
    out = tmp_path / "never.nc"
    res = run_cli("tiny_plugin", "--set", "fail_on_rank=1", "--out", out, "--quiet", mpi_ranks=2,
                  extra_path=plugin_path, timeout=120)  # a hang would hit the timeout
    assert res.returncode != 0
    assert "deliberate failure on rank 1" in res.stderr
    assert "rank 1 of 2 failed" in res.stderr
    assert not out.exists()


def test_bad_input_under_mpi_is_reported_once(tmp_path):
    res = run_cli("fear_conditioning", "--set", "lr_mix_N=oops", mpi_ranks=2, cwd=tmp_path, timeout=120)
    assert res.returncode != 0
    assert res.stderr.count("lr_mix_N='oops'") == 1


def test_fit_under_two_ranks_equals_one_process(tmp_path):
    """--fit under mpiexec: every rank takes part in the screen, refinement and confirmation; rank 0
    fits and writes one file equal to the one-process fit."""
    one, two = tmp_path / "one.nc", tmp_path / "two.nc"
    args = ["fear_conditioning", "--fit", "--preset", "quick", "--confirm-seeds", "6", "--population", "4",
            "--bootstrap", "20", "--quiet", "--no-figure"]
    r1 = run_cli(*args, "--out", one)
    r2 = run_cli(*args, "--out", two, mpi_ranks=2)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.count("wrote ") == 1
    with xr.open_dataset(one) as a, xr.open_dataset(two) as b:
        assert set(a.data_vars) == set(b.data_vars)
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        assert a.attrs["fit_report"] == b.attrs["fit_report"]


WAITING_RANK = """
import json, sys, time
from pcneuro.distributed import world
comm = world()
if comm.rank == 1:
    time.sleep(3.0)  # a rank still busy with its share
start = time.process_time()
got = comm.gather(comm.rank * 10)
word = comm.bcast("done" if comm.is_root else None)
comm.barrier()
if comm.is_root:
    print(json.dumps({"gathered": got, "word": word, "cpu": time.process_time() - start}))
"""


def test_a_rank_waiting_for_the_others_sleeps_instead_of_spinning(tmp_path):
    """MPI's blocking collectives poll: rank 0, done early, would burn a core for the 3 s rank 1 is
    busy (mpich: about 2 CPU-s of every 3). The Communicator waits on a non-blocking barrier with naps."""
    import subprocess

    mpiexec = find_mpiexec()
    if mpiexec is None:
        pytest.fail("mpiexec not found next to the running Python or on PATH: pip install mpi4py mpich")
    script = tmp_path / "waiting_rank.py"
    script.write_text(WAITING_RANK)
    res = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["gathered"] == [0, 10] and out["word"] == "done"
    assert out["cpu"] < 0.5, f"rank 0 spent {out['cpu']:.2f} CPU-s waiting 3 s for rank 1"
