"""Spreading runs over MPI ranks (mpi4py is optional).

Without mpi4py, or outside ``mpiexec``, everything runs in one process. Under ``mpiexec -n K`` the
runner cuts a plan into chunks (whole engine programs, the same whatever K is) and
:func:`deal_chunks` gives each rank whole chunks, balanced by their estimated cost (DESIGN.md,
Distribution: never a slice of every program, which would multiply kernel launches by K). Each rank
simulates its chunks on its node-local device (:meth:`Communicator.local_rank`, from a shared-memory
split of the world communicator) and rank 0 gathers the results. A rank that raises prints its
traceback to stderr and aborts the whole job with a non-zero exit code, so a failure never leaves
the other ranks hanging in a collective.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any, Callable, List, Optional, Sequence, TypeVar

T = TypeVar("T")


class Communicator:
    """The slice of MPI pcneuro uses; a single-process stand-in when MPI is absent."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self._local_rank = _node_local_rank(comm, self.rank)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def gather(self, value: Any) -> Optional[List[Any]]:
        if self.comm is None:
            return [value]
        self._wait_for_all()
        return self.comm.gather(value, root=0)

    def bcast(self, value: Any) -> Any:
        if self.comm is None:
            return value
        self._wait_for_all()
        return self.comm.bcast(value, root=0)

    def barrier(self) -> None:
        if self.comm is not None:
            self._wait_for_all()

    def _wait_for_all(self, longest_nap: float = 0.05) -> None:
        """Return once every rank has arrived, sleeping meanwhile. MPI's blocking collectives poll:
        a rank that finished its share early (or waits while rank 0 prepares data or writes) would
        burn a whole core until the last rank arrives, taking it from other work on the node (seen
        with mpich: 6 CPU-s spent in an 8 s wait). A non-blocking barrier tested with naps from 1 ms
        up to ``longest_nap`` costs nothing measurable and at most that much latency."""
        if self.size == 1 or not hasattr(self.comm, "Ibarrier"):
            if self.comm is not None:
                self.comm.Barrier()
            return
        request = self.comm.Ibarrier()
        nap = 0.001
        while not request.Test():
            time.sleep(nap)
            nap = min(2 * nap, longest_nap)

    def abort(self, code: int = 1) -> None:
        if self.comm is not None and self.size > 1:
            self.comm.Abort(code)
        raise SystemExit(code)

    def local_rank(self) -> int:
        """This rank's index among the ranks on its node (0 in one process): it picks the GPU."""
        return self._local_rank


_LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")


def _node_local_rank(comm, rank: int) -> int:
    """The rank within a shared-memory split of ``comm`` (one group per node). Collective: every rank
    of ``comm`` constructs its Communicator at the same point (``world()``). Without MPI-3's
    ``Split_type`` the launcher's environment variables decide, else the world rank."""
    if comm is not None and hasattr(comm, "Split_type"):
        from mpi4py import MPI

        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        try:
            return node.Get_rank()
        finally:
            node.Free()
    for var in _LOCAL_RANK_VARS:
        if var in os.environ:
            return int(os.environ[var])
    return rank


def launched_by_mpi() -> bool:
    return any(v in os.environ for v in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"))


def world() -> Communicator:
    """COMM_WORLD when started under an MPI launcher and mpi4py is importable, else one process."""
    if not launched_by_mpi():
        return Communicator(None)
    try:
        from mpi4py import MPI
    except ImportError:  # launched by mpiexec without mpi4py: every rank would redo all the work
        sys.stderr.write("pcneuro: started under mpiexec but mpi4py is not installed (pip install mpi4py mpich)\n")
        raise SystemExit(2)
    return Communicator(MPI.COMM_WORLD)


def deal_chunks(costs: Sequence[float], size: int) -> List[List[int]]:
    """Whole chunks to ``size`` ranks: ``costs[i]`` is chunk i's estimated cost; returns, per rank,
    the ids of its chunks in increasing order.

    Greedy longest-processing-time: chunks in decreasing cost (ties: lower id first) each go to the
    least-loaded rank so far (ties: lower rank). Pure and deterministic, so every rank computes the
    same assignment without communicating; the makespan is at most 4/3 of the best possible.
    """
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"number of ranks must be a positive integer, got {size!r}")
    for i, c in enumerate(costs):
        if not (float(c) >= 0.0 and float(c) != float("inf")):
            raise ValueError(f"chunk {i} has cost {c!r}; costs must be finite and non-negative")
    load = [0.0] * int(size)
    shares: List[List[int]] = [[] for _ in range(int(size))]
    for i in sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i)):
        target = min(range(len(load)), key=lambda r: (load[r], r))
        shares[target].append(i)
        load[target] += float(costs[i])
    return [sorted(ids) for ids in shares]


def on_root(comm: Communicator, fn: Callable[[], T]) -> Optional[T]:
    """Run ``fn`` on rank 0 only; its result stays there (None elsewhere). If it raises
    ValueError/LookupError (bad input found late, e.g. nothing fits), every rank raises the same
    one-line ValueError, so no rank is left waiting in a collective."""
    result, error = None, None
    if comm.is_root:
        try:
            result = fn()
        except (ValueError, LookupError) as exc:
            error = str(exc)
    if comm.size > 1:
        error = comm.bcast(error)
    if error is not None:
        raise ValueError(error)
    return result


def guarded(comm: Communicator, fn: Callable[[], T]) -> T:
    """Run ``fn``; if it raises on a rank of a multi-rank job, report it and abort every rank."""
    if comm.size == 1:
        return fn()
    try:
        return fn()
    except KeyboardInterrupt:
        raise  # Ctrl-C reaches every rank (mpiexec forwards SIGINT): each stops; the CLI says one line
    except BaseException as exc:  # noqa: BLE001 - any failure must end the whole job
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        message = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(f"pcneuro: rank {comm.rank} of {comm.size} failed:\n{message}")
        sys.stderr.write(f"pcneuro: error on rank {comm.rank}: {exc}\n")
        sys.stderr.flush()
        comm.abort(1)
        raise
