"""Spreading runs over MPI ranks (mpi4py is optional).

Without mpi4py, or outside ``mpiexec``, everything runs in one process. Under ``mpiexec -n K`` the
runs of a plan are dealt round-robin to the ranks, each rank simulates its share on its own device,
and rank 0 gathers the results. A rank that raises prints its traceback to stderr and aborts the
whole job with a non-zero exit code, so a failure never leaves the other ranks hanging in a
collective.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable, List, Optional, Sequence, TypeVar

T = TypeVar("T")


class Communicator:
    """The slice of MPI pcneuro uses; a single-process stand-in when MPI is absent."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def gather(self, value: Any) -> Optional[List[Any]]:
        if self.comm is None:
            return [value]
        return self.comm.gather(value, root=0)

    def bcast(self, value: Any) -> Any:
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def barrier(self) -> None:
        if self.comm is not None:
            self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        if self.comm is not None and self.size > 1:
            self.comm.Abort(code)
        raise SystemExit(code)

    def local_rank(self) -> int:
        for var in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK"):
            if var in os.environ:
                return int(os.environ[var])
        return self.rank


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


def deal(items: Sequence[T], rank: int, size: int) -> List[T]:
    """This rank's share of ``items``: every size-th item starting at ``rank``."""
    return list(items[rank::size])


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
    except BaseException as exc:  # noqa: BLE001 - any failure must end the whole job
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        message = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(f"pcneuro: rank {comm.rank} of {comm.size} failed:\n{message}")
        sys.stderr.write(f"pcneuro: error on rank {comm.rank}: {exc}\n")
        sys.stderr.flush()
        comm.abort(1)
        raise
