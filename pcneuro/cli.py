"""The ``run_paradigm.py`` / ``run-paradigm`` command line."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

EPILOG = """\
examples:
  run_paradigm.py --list                                   registered paradigms with tags
  run_paradigm.py fear_conditioning --info                 hyperparameters, grid and presets
  run_paradigm.py fear_conditioning --rule pc              simulate the default grid under PC
  run_paradigm.py fear_conditioning --preset quick         a small, fast version
  run_paradigm.py fear_conditioning --set lr_mix_N=1.0 --grid init_sd=0.5,0.1,0.01
  mpiexec -n 2 run_paradigm.py fear_conditioning           runs dealt over two MPI ranks
  run_paradigm.py fear_conditioning --fit                  PC and BP fitted to the rat data
  run_paradigm.py sensorimotor_adaptation --fit --data my.csv   fitted to your own data

--fit screens the grid (both rules), refines the best settings in log10, reruns the finalists on
fresh seeds (>= 100, --confirm-seeds), fits the read-out with lmfit, bootstraps the seeds, prints the
report (fitted values, chi2, AIC, BIC, PC vs BP) and stores the fit in the same NetCDF file, with a
figure <run-id>-fit.png. Data files: docs/data_format.md.

Results are written as NetCDF4 to results/<paradigm>/<run-id>.nc (or --out) with dims rule, seed,
one per grid axis, then the paradigm's own; open them with xarray.open_dataset. A summary figure
goes next to the file as <run-id>.png (off with --no-figure).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other bad-input message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="run_paradigm.py",
        description="Simulate a learning paradigm under predictive coding (pc) and backprop (bp) for many "
                    "seeds and hyperparameter settings at once, and save the results as NetCDF.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", help="registered paradigm name (see --list)")
    p.add_argument("--list", action="store_true", help="list registered paradigms and exit")
    p.add_argument("--tag", help="with --list: only paradigms carrying this tag")
    p.add_argument("--info", action="store_true", help="describe the paradigm's hyperparameters, grid and presets")
    p.add_argument("--rule", default="all", help="pc, bp, another rule the paradigm offers, or all (default)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="number of seeds, 0..N-1 (default: the preset's or the paradigm's)")
    p.add_argument("--preset", default=None, help="named scale, e.g. quick (CPU, tests) or paper (published scale)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a hyperparameter (a grid axis collapses to that value); repeatable")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="make a hyperparameter a grid axis; repeatable")
    p.add_argument("--device", default="auto", help="auto (default: a GPU if present), cpu, cuda or cuda:I")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="FILE.nc, or a folder (any other path, created if need be) for <run-id>.nc "
                        "(default results/<paradigm>/<run-id>.nc)")
    p.add_argument("--chunk", type=int, default=None, metavar="N",
                   help="at most N runs per engine program (default: from the configuration and the device "
                        "type's total memory; the chunk plan never depends on free memory or the ranks)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="finish an interrupted run from its checkpoints: with --out FILE.nc, or PATH naming "
                        "its checkpoint folder (FILE.nc.chunks) or FILE.nc; a changed configuration is refused")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where datasets (Fashion-MNIST, CIFAR-10) are found or downloaded to (default: "
                        "$PCNEURO_DATA, else a per-user cache folder)")
    p.add_argument("--no-download", action="store_true",
                   help="never download a missing dataset: stop with a message saying where to put it")
    p.add_argument("--deterministic", action="store_true",
                   help="use torch's deterministic algorithms (bitwise-repeatable GPU runs; slower)")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="run each batch's inference loop eagerly on CUDA instead of replaying it as a CUDA graph "
                        "(same values; for debugging and profiling; also PCNEURO_CUDA_GRAPHS=0)")
    p.add_argument("--no-figure", action="store_true", help="do not draw the summary figure (<run-id>.png)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    f = p.add_argument_group("fitting to recorded behaviour (--fit)")
    f.add_argument("--fit", action="store_true",
                   help="simulate every rule, fit the read-out to recorded data and compare the rules")
    f.add_argument("--data", metavar="FILE.csv", default=None,
                   help="your own recorded data (default: the paradigm's packaged data); see docs/data_format.md")
    f.add_argument("--confirm-seeds", type=int, default=100, metavar="N",
                   help="fresh seeds the finalists are rerun with (default 100; 0 reports the screen)")
    f.add_argument("--refine-rounds", type=int, default=2, metavar="N",
                   help="rounds of the log10 population search around the best settings (default 2)")
    f.add_argument("--population", type=int, default=32, metavar="N", help="settings per refinement round (32)")
    f.add_argument("--finalists", type=int, default=4, metavar="N", help="settings per rule rerun to confirm (4)")
    f.add_argument("--bootstrap", type=int, default=200, metavar="N", help="seed-bootstrap resamples (200)")
    f.add_argument("--polish", type=int, default=0, metavar="N",
                   help="after confirming, refine each rule's best setting with lmfit's Nelder-Mead in log10 "
                        "within the grid, at most N simulations on the confirmation seeds (default 0: off)")
    f.add_argument("--fit-compat", action="store_true",
                   help="the reference's own tie-break (exact ties, then signed k) in its baseline fit only "
                        "(behaviour spec §0.4.7); the project's fit is unchanged")
    return p


def _pairs(items: Sequence[str], flag: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{flag} {item!r} is not KEY=VALUE")
        if key.strip() in out:
            raise ValueError(f"{flag} gives {key.strip()!r} twice")
        out[key.strip()] = value.strip()
    return out


def list_text(tag: Optional[str]) -> str:
    from .registry import list_paradigms, paradigm_class

    names = list_paradigms(tag)
    if not names:
        return f"no paradigms{' tagged ' + repr(tag) if tag else ''}"
    width = max(len(n) for n in names)
    lines = []
    for name in names:
        cls = paradigm_class(name)
        lines.append(f"{name:<{width}}  [{', '.join(cls.tags)}]  {cls.title}")
    return "\n".join(lines)


def info_text(name: str) -> str:
    from .registry import paradigm_class

    cls = paradigm_class(name)
    lines = [f"{cls.name}: {cls.title}", f"  citation: {cls.citation}", f"  rules: {', '.join(cls.rules)}"
             + (f" (also by name: {', '.join(cls.extra_rules)})" if cls.extra_rules else ""),
             f"  default seeds: {cls.default_seeds}", "  hyperparameters (default; * = default grid axis):"]
    for key, h in cls.hyperparameters.items():
        star = "*" if key in cls.grid else " "
        extra = f"  grid {list(cls.grid[key])}" if key in cls.grid else ""
        lines.append(f"   {star} {key} = {h.default!r} ({h.type.__name__}): {h.doc}{extra}")
    lines.append("  presets:")
    for key, preset in cls.presets.items():
        lines.append(f"    {key}: {preset.doc}")
    lines.append(f"  measures: {', '.join(f'{m} {tuple(v.dims)}' for m, v in cls.measures.items())}")
    return "\n".join(lines)


def summary_text(ds) -> str:
    """The paradigm's main measure per rule and condition: seed mean (± SEM), summarised over the grid."""
    from .registry import paradigm_class
    from .results import grid_dims as dataset_grid_dims, stack_conditions

    cls = paradigm_class(ds.attrs["paradigm"])
    custom = cls.summary_table(ds)
    if custom is not None:
        return custom
    da = ds[cls.main_measure].isel(cls.summary_isel)
    grid_dims = dataset_grid_dims(ds)
    n_seeds = da.sizes["seed"]
    cond_dims = [d for d in da.dims if d not in ("rule", "seed", *grid_dims)]
    stacked, labels = stack_conditions(da.mean("seed"), cond_dims, cls.main_measure)
    n_points = int(np.prod([ds.sizes[d] for d in grid_dims])) if grid_dims else 1
    where = ", ".join(f"{k}={v}" for k, v in cls.summary_isel.items())
    head = f"{cls.main_measure}" + (f" at {where}" if where else "")
    if n_points == 1:
        sem = (da.std("seed", ddof=1) / np.sqrt(n_seeds)) if n_seeds > 1 else None
        sem = stack_conditions(sem, cond_dims, cls.main_measure)[0] if sem is not None else None
        title = f"{head}: mean ± SEM over {n_seeds} seed(s)"
    else:
        title = f"{head}: seed mean ({n_seeds} seeds), averaged over {n_points} grid points [min .. max]"
    cells: List[List[str]] = []
    for rule in stacked["rule"].values:
        row = [str(rule)]
        r = stacked.sel(rule=rule)
        for j in range(len(labels)):
            v = r.isel(_cond=j)
            if n_points == 1:
                m = float(v.squeeze())
                s = float(sem.sel(rule=rule).isel(_cond=j).squeeze()) if sem is not None else float("nan")
                row.append(f"{m:.4g} ± {s:.2g}" if sem is not None else f"{m:.4g}")
            else:
                vals = v.values.ravel()
                row.append(f"{np.nanmean(vals):.4g} [{np.nanmin(vals):.3g} .. {np.nanmax(vals):.3g}]")
        cells.append(row)
    header = ["rule", *labels]
    widths = [max(len(header[i]), *(len(r[i]) for r in cells)) for i in range(len(header))]
    fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths))  # noqa: E731
    return "\n".join([title, fmt(header), *(fmt(r) for r in cells)])


def console_main() -> int:
    """``run_paradigm.py`` and ``run-paradigm``: :func:`main` in a process of its own, which first
    keeps freed memory in the heap for the CPU's big stacked tensors (:mod:`pcneuro.cpu_memory`; a
    process-wide allocator setting, so in-process callers of :func:`main` do not get it)."""
    from .cpu_memory import keep_freed_memory

    keep_freed_memory()
    return main()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; process-wide switches it sets (``--no-cuda-graphs``) end with it."""
    from .engine.capture import ENV_SWITCH

    before = os.environ.get(ENV_SWITCH)
    try:
        return _main(argv)
    finally:
        if before is None:
            os.environ.pop(ENV_SWITCH, None)
        else:
            os.environ[ENV_SWITCH] = before


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .distributed import world

    comm = world()
    say_error = comm.is_root

    def fail(message: str) -> int:
        if say_error:
            sys.stderr.write(f"run_paradigm.py: error: {message}\n")
        return 2

    try:
        if args.list:
            if comm.is_root:
                print(list_text(args.tag))
            return 0
        if not args.name:
            return fail("give a paradigm name, or --list to see them")
        if args.info:
            if comm.is_root:
                print(info_text(args.name))
            return 0
        if args.no_cuda_graphs:
            from .engine.capture import ENV_SWITCH

            os.environ[ENV_SWITCH] = "0"  # read by every engine this process builds (each rank parses its own)
        if args.seeds is not None and args.seeds < 1:
            return fail(f"--seeds {args.seeds}: need at least 1 seed")
        settings = _pairs(args.settings, "--set")
        grid = {k: [v.strip() for v in vals.split(",")] for k, vals in _pairs(args.grid, "--grid").items()}
        command = " ".join(["run_paradigm.py", *(argv if argv is not None else sys.argv[1:])])
        if args.data is not None and not args.fit:
            return fail("--data needs --fit")
        if args.fit:
            if args.resume is not None or args.chunk is not None:
                return fail("--resume and --chunk are not available with --fit")
            return _fit_main(args, settings, grid, command, comm)
        from .runner import run

        if args.chunk is not None and args.chunk < 1:
            return fail(f"--chunk {args.chunk}: need at least 1 run per chunk")
        ds = run(args.name, rule=args.rule, seeds=args.seeds, preset=args.preset, settings=settings, grid=grid,
                 device=args.device, out=args.out, figure=not args.no_figure, quiet=args.quiet,
                 deterministic=args.deterministic, command=command, comm=comm, chunk=args.chunk,
                 resume=args.resume, data_dir=args.data_dir, download=False if args.no_download else None)
    except (ValueError, LookupError, FileNotFoundError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt as exc:  # Ctrl-C: one line, no traceback, the shell's status for SIGINT
        if comm.is_root:
            message = exc.message() if hasattr(exc, "message") else "interrupted"
            sys.stderr.write(f"{message}\n")
        return 130
    if ds is None:  # not rank 0
        return 0
    if not args.quiet:
        print(summary_text(ds))
    from .results import grid_dims

    n_runs = ds.sizes["rule"] * ds.sizes["seed"] * int(np.prod([ds.sizes[d] for d in grid_dims(ds)]))
    print(f"wrote {ds.encoding['source']} ({n_runs} runs, {ds.attrs['elapsed_seconds']:.1f} s, "
          f"{ds.attrs['device']}, {ds.attrs['mpi_size']} rank(s))")
    if "figure" in ds.encoding:
        print(f"figure {ds.encoding['figure']}")
    return 0


def _fit_main(args, settings, grid, command, comm) -> int:
    from pcneuro.fits.search import SearchConfig
    from pcneuro.fits.workflow import fit_paradigm

    config = SearchConfig(refine_rounds=args.refine_rounds, population=args.population, finalists=args.finalists,
                          confirm_seeds=args.confirm_seeds, n_boot=args.bootstrap, compat=args.fit_compat,
                          polish=args.polish)
    ds, report = fit_paradigm(args.name, data=args.data, rule=args.rule, seeds=args.seeds, preset=args.preset,
                              settings=settings, grid=grid, config=config, device=args.device, out=args.out,
                              figure=not args.no_figure, quiet=args.quiet, deterministic=args.deterministic,
                              command=command, comm=comm)
    if ds is None:
        return 0
    print(report.table())
    print(f"wrote {ds.encoding['source']} (fit in {ds.attrs['fit_elapsed_seconds']:.1f} s, {ds.attrs['device']}, "
          f"{ds.attrs['mpi_size']} rank(s))")
    for key in ("figure", "fit_figure"):
        if key in ds.encoding:
            print(f"figure {ds.encoding[key]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
