"""Fit reports: the table people read, the variables a results file keeps, and the figure.

A :class:`FitReport` holds, per rule, the screen fit over the grid (profile along every
hyperparameter, bootstrap confidence set of settings, the reference's baseline with its ties) and
the final fit (confirmed on fresh seeds when the search ran: lmfit read-out, χ², AIC, BIC, degrees of
freedom, bootstrap intervals), and the PC-versus-BP comparison (ΔAIC, ΔBIC on identical residuals,
bootstrap distribution of Δχ²). ``to_dataset`` turns it into plain NetCDF variables and attributes
(no pickles); ``figure`` draws the paper-style panel: Data / PC / BP per condition, points per
subject or seed and mean ± SEM.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import xarray as xr

from .analysis import RuleFit, label_text
from .bootstrap import delta_error
from .readout import ObservedData
from .selection import compare_models, profile


def _fmt(v: float, digits: int = 4) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.{digits}g}"


def _setting_text(setting: Dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v, 3) if isinstance(v, float) else v}" for k, v in setting.items()) or "—"


@dataclass
class FitReport:
    paradigm: str
    spec: Any  # FitSpec
    data: ObservedData
    data_source: str
    grid: Dict[str, Tuple[Any, ...]]
    screen: Dict[str, RuleFit]
    final: Dict[str, RuleFit]
    level: float = 0.95
    confirmed: bool = False
    searched: Optional[Dict[str, Any]] = None  # rule -> (Candidates, chi2) after refinement
    notes: List[str] = field(default_factory=list)

    # -- derived numbers ---------------------------------------------------------------------------
    @property
    def rules(self) -> List[str]:
        return list(self.final)

    def comparison(self, fits: Optional[Dict[str, RuleFit]] = None) -> Optional[Dict[str, Any]]:
        """PC (first rule) versus BP (second) on one seed set (the final one by default): ΔAIC, ΔBIC
        on identical residuals and the bootstrap distribution of Δχ² (negative favours the first)."""
        fits = self.final if fits is None else fits
        if len(self.rules) < 2:
            return None
        a, b = (fits[r] for r in self.rules[:2])
        models = compare_models(a.readout, b.readout)
        out: Dict[str, Any] = {"rules": self.rules[:2], "delta_aic": float(models.delta_aic),
                               "delta_bic": float(models.delta_bic), "indicative": bool(models.indicative),
                               "seeds": len(a.candidates.seeds)}
        if a.boot is not None and b.boot is not None:
            d = delta_error(a.boot, b.boot)
            out.update(delta_chisqr_samples=np.asarray(d.delta, dtype=float), delta_chisqr_ci95=d.ci95,
                       delta_chisqr_ci68=d.ci68, fraction_first_better=float(d.frac_negative))
        return out

    def verdict(self) -> Optional[str]:
        """Which rule fits better, declared only when the 95 % bootstrap interval of Δχ² excludes 0
        on two disjoint seed sets (the screen's and the confirmation's) with the same sign."""
        if len(self.rules) < 2:
            return None
        a, b = (r.upper() for r in self.rules[:2])
        sets = [self.comparison(self.screen)] + ([self.comparison()] if self.confirmed else [])
        names = ["screen", "confirmation"]
        if any(c is None or "delta_chisqr_ci95" not in c for c in sets):
            return "no winner declared: no bootstrap"
        signs = {(-1 if c["delta_chisqr_ci95"][1] < 0 else 1 if c["delta_chisqr_ci95"][0] > 0 else 0) for c in sets}
        text = "; ".join(f"{name}, {c['seeds']} seeds: Δχ² 95 % CI [{_fmt(c['delta_chisqr_ci95'][0], 3)}, "
                         f"{_fmt(c['delta_chisqr_ci95'][1], 3)}], ΔAIC {_fmt(c['delta_aic'], 3)}"
                         for name, c in zip(names, sets))
        if len(sets) < 2:
            return f"no winner declared from one seed set ({text}); --fit confirms on fresh seeds"
        if signs == {-1}:
            return f"{a} fits better on both disjoint seed sets ({text})"
        if signs == {1}:
            return f"{b} fits better on both disjoint seed sets ({text})"
        return f"no winner: the seed sets do not agree or an interval includes 0 ({text})"

    def profiles(self, rule: str) -> Dict[str, Tuple[list, np.ndarray]]:
        """Best χ² along each grid axis with ≥ 2 values (the screen's grid)."""
        axes = {k: list(v) for k, v in self.grid.items() if len(v) > 1}
        if not axes:
            return {}
        shape = tuple(len(v) for v in self.grid.values())
        chi2 = self.screen[rule].chi2.reshape(shape)
        full = profile(chi2, {k: list(v) for k, v in self.grid.items()}, shape)
        return {k: (list(v[0]), np.asarray(v[1], dtype=float)) for k, v in full.items() if k in axes}

    def confidence_set(self, rule: str) -> List[int]:
        """Screen settings in the bootstrap confidence set, plus every setting whose χ² ties with a
        member's (within 1e-9): the data cannot tell tied settings apart, so none is left out."""
        f = self.screen[rule]
        if f.boot is None:
            return []
        members = [int(i) for i in f.boot.confidence_set(self.level)]
        chi2 = f.chi2
        extra = [j for j in range(len(chi2)) if j not in members and np.isfinite(chi2[j]) and any(
            abs(chi2[j] - chi2[i]) <= 1e-9 * max(abs(chi2[i]), abs(chi2[j])) for i in members)]
        return members + extra

    # -- text --------------------------------------------------------------------------------------
    def table(self) -> str:
        d = self.data
        labels = [label_text(l) for l in d.labels]
        scale = f"residuals / pooled within-condition SD {d.scale:.4g}" if d.scaled else \
            "cell means only: residuals unscaled, AIC/BIC indicative"
        lines = [f"fit of {self.spec.measure} ({self.spec.readout} read-out) to {self.data_source}: "
                 f"{len(d.y)} points, {len(labels)} conditions; {scale}"]
        stage = (f"confirmed on {len(self.final[self.rules[0]].candidates.seeds)} fresh seeds"
                 if self.confirmed else f"on the screen's {len(self.final[self.rules[0]].candidates.seeds)} seeds")
        boot = "seeds and data points resampled" if d.scaled else "seeds resampled"
        lines.append(f"best setting per rule ({stage}); fitted value per condition with its {int(self.level * 100)} % "
                     f"bootstrap interval ({boot})")
        header = ["rule", "k", "b", "chi2", "AIC", "BIC", "params", "dof", *labels]
        rows = [header]
        for rule, f in self.final.items():
            r = f.readout
            ci = _fitted_ci(f, self.level)
            cells = [f"{_fmt(v, 3)} [{_fmt(lo, 3)}, {_fmt(hi, 3)}]" if ci is not None else _fmt(v, 3)
                     for v, lo, hi in zip(r.fitted, *(ci if ci is not None else (r.fitted, r.fitted)))]
            rows.append([rule, f"{_fmt(r.k)}±{_fmt(r.k_stderr, 2)}",
                         f"{_fmt(r.b)}±{_fmt(r.b_stderr, 2)}" if self.spec.readout == "affine" else "0",
                         _fmt(r.chisqr), _fmt(r.aic), _fmt(r.bic), str(r.nvarys_total), str(r.dof_conditions),
                         *cells])
        rows.append(["data", "", "", "", "", "", "", "", *[_fmt(m, 3) for m in d.means]])
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        for rule, f in self.final.items():
            tie = (f" (a tie of {len(f.ties)} candidates on χ²; the one with the smallest |k|·SEM shown)"
                   if len(f.ties) > 1 else "")
            lines.append(f"  {rule}: {_setting_text(f.best_setting)}{tie}"
                         + ("" if f.readout.identified else
                            f"  (not identified: {f.readout.nvarys_total} free parameters for "
                            f"{len(labels)} conditions)"))
        comp = self.comparison()
        if comp is not None:
            a, b = comp["rules"]
            text = (f"{a.upper()} vs {b.upper()}: ΔAIC = {_fmt(comp.get('delta_aic'))}, "
                    f"ΔBIC = {_fmt(comp.get('delta_bic'))} (negative favours {a.upper()})")
            if "delta_chisqr_ci95" in comp:
                lo, hi = comp["delta_chisqr_ci95"]
                text += (f"; bootstrap Δχ² 95 % CI [{_fmt(lo)}, {_fmt(hi)}], {a.upper()} fits better in "
                         f"{100 * comp['fraction_first_better']:.0f} % of resamples")
            lines.append(text + (" [indicative: cell means]" if comp["indicative"] else ""))
            lines.append(f"verdict: {self.verdict()}")
        lines.append("screen over the grid:")
        for rule, f in self.screen.items():
            base = f.baseline
            what = "E" if base.kind == "closed_form" else "½Σ error"
            section = "§0.4" if base.kind == "closed_form" else "§3.6"
            if base.best < 0:
                lines.append(f"  {rule}: no finite reference fit ({section}) on the grid")
            else:
                tie = ""
                if len(base.ties) > 1:
                    tie = f", a tie of {len(base.ties)} settings"
                    if len(base.remaining) > 1:
                        tie += f" ({len(base.remaining)} still tied after the |k|·SEM tie-break)"
                edge = " (on the edge of the w, b grid)" if base.edge is not None and base.edge[base.best] else ""
                lines.append(f"  {rule}: reference fit ({section}) best {what} = {_fmt(base.error[base.best], 6)} at "
                             f"{_setting_text(f.candidates.settings[base.best])}{tie}{edge}")
            n_div = int(f.candidates.diverged.sum())
            if n_div:
                lines.append(f"    {n_div} of {f.candidates.n} grid settings diverged for some seed (left out)")
            cs = self.confidence_set(rule)
            if cs:
                lines.append(f"    {int(self.level * 100)} % bootstrap confidence set: {len(cs)} of {f.candidates.n} "
                             f"grid settings; profile (best χ² along each axis):")
            for axis, (values, best) in self.profiles(rule).items():
                cells = ", ".join(f"{_fmt(v, 3)}: {_fmt(e, 3)}" for v, e in zip(values, best))
                lines.append(f"      {axis}  {cells}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    # -- storage -----------------------------------------------------------------------------------
    def to_dataset(self) -> xr.Dataset:
        """The fit as NetCDF-ready variables (dims ``rule``, ``fit_condition``, ``bound``, …) and attrs."""
        d = self.data
        labels = [label_text(l) for l in d.labels]
        rules = self.rules
        coords = {"rule": rules, "fit_condition": labels, "bound": ["low", "high"]}
        v: Dict[str, Any] = {}

        def put(name, dims, values, long_name, units="1"):
            v[name] = (dims, np.asarray(values), {"long_name": long_name, "units": units})

        counts = np.bincount(d.cond, minlength=len(labels))
        put("data_mean", ("fit_condition",), d.means, "recorded mean per condition", "data units")
        put("data_n", ("fit_condition",), counts, "recorded points per condition")
        sem = np.array([np.std(d.y[d.cond == c], ddof=1) / np.sqrt(n) if n > 1 else np.nan
                        for c, n in enumerate(counts)])
        put("data_sem", ("fit_condition",), sem, "recorded SEM per condition", "data units")
        F = [self.final[r] for r in rules]
        R = [f.readout for f in F]
        put("fit_k", ("rule",), [r.k for r in R], "read-out slope k (lmfit)")
        put("fit_k_stderr", ("rule",), [r.k_stderr for r in R], "standard error of k (lmfit)")
        put("fit_b", ("rule",), [r.b for r in R], "read-out offset b (lmfit; 0 for a scale read-out)", "data units")
        put("fit_b_stderr", ("rule",), [r.b_stderr for r in R], "standard error of b (lmfit)", "data units")
        put("fit_chisqr", ("rule",), [r.chisqr for r in R], "chi-square of the per-point residuals")
        put("fit_aic", ("rule",), [r.aic for r in R], "AIC counting read-out and searched hyperparameters")
        put("fit_bic", ("rule",), [r.bic for r in R], "BIC counting read-out and searched hyperparameters")
        put("fit_n_params", ("rule",), [r.nvarys_total for r in R], "free parameters (read-out + searched)")
        put("fit_dof", ("rule",), [r.dof_conditions for r in R], "distinct conditions minus free parameters")
        put("fit_fitted", ("rule", "fit_condition"), [r.fitted for r in R], "fitted value per condition",
            "data units")
        put("fit_fitted_sem", ("rule", "fit_condition"), [f.fitted_sem for f in F],
            "SEM over seeds of the fitted value", "data units")
        for lvl, tag in ((self.level, "ci"), (0.68, "ci68")):
            cis = [_fitted_ci(f, lvl) for f in F]
            if all(c is not None for c in cis):
                put(f"fit_fitted_{tag}", ("rule", "fit_condition", "bound"),
                    [np.stack(c, axis=-1) for c in cis],
                    f"{int(lvl * 100)} % bootstrap interval of the fitted value (seeds and data points resampled)",
                    "data units")
        if all(f.boot is not None for f in F):
            for attr, long_name in (("k", "read-out slope k"), ("b", "read-out offset b")):
                put(f"fit_{attr}_ci", ("rule", "bound"), [np.stack(f.boot.ci(attr, self.level)) for f in F],
                    f"{int(self.level * 100)} % bootstrap interval of {long_name}")
            put("fit_chisqr_ci", ("rule", "bound"), [np.stack(f.boot.ci("chi2_best", self.level)) for f in F],
                f"{int(self.level * 100)} % bootstrap interval of chi-square")
        n_seeds = max(f.candidates.values.shape[1] for f in F)
        seed_fitted = np.full((len(rules), n_seeds, len(labels)), np.nan)
        for i, f in enumerate(F):
            seed_fitted[i, : f.seed_fitted.shape[0]] = f.seed_fitted
        put("fit_seed_fitted", ("rule", "fit_seed", "fit_condition"), seed_fitted,
            "per-seed fitted value at the best setting (k·metric + b)", "data units")
        longest = max(F, key=lambda f: len(f.candidates.seeds))
        coords["fit_seed"] = list(longest.candidates.seeds)  # the seeds of the final fit (fresh when confirmed)
        for axis in sorted({a for f in F for a in f.best_setting}):
            put(f"fit_best_{axis}", ("rule",), [f.best_setting.get(axis, np.nan) for f in F],
                f"best setting: {axis}")
        # candidates after the search (settings, chi2, stage), padded per rule
        pools = self.searched or {r: (f.candidates, f.chi2) for r, f in self.screen.items()}
        n_cand = max(c.n for c, _ in pools.values())
        axes = sorted({a for c, _ in pools.values() for s in c.settings for a in s})
        table = {a: np.full((len(rules), n_cand), np.nan) for a in axes}
        chi = np.full((len(rules), n_cand), np.nan)
        stage = np.full((len(rules), n_cand), "", dtype=object)
        for i, r in enumerate(rules):
            c, x2 = pools[r]
            chi[i, : c.n] = x2
            stage[i, : c.n] = c.stage
            for j, s in enumerate(c.settings):
                for a in axes:
                    val = s.get(a, np.nan)
                    table[a][i, j] = float(val) if isinstance(val, (int, float, np.number)) else np.nan
        for a in axes:
            put(f"candidate_{a}", ("rule", "candidate"), table[a], f"searched setting: {a}")
        put("candidate_chisqr", ("rule", "candidate"), chi, "chi-square on the screening seeds")
        v["candidate_stage"] = (("rule", "candidate"), stage.astype(str),
                                {"long_name": "where the candidate came from (grid, refine)"})
        # the screen over the grid: project criterion, reference baseline, bootstrap best frequency
        grid_dims = list(self.grid)
        shape = tuple(len(x) for x in self.grid.values())
        if grid_dims:
            for name, getter, long_name in (
                    ("screen_chisqr", lambda f: f.chi2, "chi-square of the read-out at each grid point"),
                    ("reference_error", lambda f: f.baseline.error,
                     "the reference's error at each grid point (§0.4: E = Σ squared errors; §3.6: ½Σ)"),
                    ("reference_k", lambda f: f.baseline.k, "the reference's read-out slope (k, or w)"),
                    ("reference_b", lambda f: f.baseline.b, "the reference's read-out offset")):
                put(name, ("rule", *grid_dims), [getter(self.screen[r]).reshape(shape) for r in rules], long_name)
            if all(self.screen[r].boot is not None for r in rules):
                put("screen_best_frequency", ("rule", *grid_dims),
                    [np.asarray(self.screen[r].boot.argmin_frequency).reshape(shape) for r in rules],
                    "fraction of bootstrap resamples in which the grid point is best")
                member = np.zeros((len(rules), int(np.prod(shape))), dtype=np.int8)
                for i, r in enumerate(rules):
                    member[i, self.confidence_set(r)] = 1
                put("screen_in_confidence_set", ("rule", *grid_dims), member.reshape(len(rules), *shape),
                    f"1 if the grid point is in the {int(self.level * 100)} % bootstrap confidence set")
            put("reference_is_tie", ("rule", *grid_dims),
                [np.isin(np.arange(int(np.prod(shape))), self.screen[r].baseline.ties).reshape(shape).astype(np.int8)
                 for r in rules], "1 if the grid point ties for the reference's best error")
            for k2, val in self.grid.items():
                coords[k2] = list(val)
        comp = self.comparison()
        attrs = {
            "fit_data_source": self.data_source,
            "fit_measure": self.spec.measure,
            "fit_readout": self.spec.readout,
            "fit_confirmed": int(self.confirmed),
            "fit_level": self.level,
            "fit_scaled": int(d.scaled),
            "fit_scale": float(d.scale),
            "fit_report": self.table(),
        }
        if comp is not None:
            if "delta_chisqr_samples" in comp:
                put("fit_delta_chisqr", ("bootstrap",), comp["delta_chisqr_samples"],
                    f"bootstrap chi-square difference {comp['rules'][0]} - {comp['rules'][1]}")
            attrs["fit_comparison"] = json.dumps({k: val for k, val in comp.items() if k != "delta_chisqr_samples"},
                                                 default=float)
            attrs["fit_verdict"] = self.verdict()
        ds = xr.Dataset(v, coords=coords)
        ds.attrs.update(attrs)
        return ds

    # -- figure ------------------------------------------------------------------------------------
    def figure(self, path) -> Path:
        """Data / PC / BP per condition, like the paper's panels: mean ± SEM, with the points (subjects
        or seeds) for one condition dim; lines over the first dim for two (reversal: punish → next)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        d = self.data
        labels = list(d.labels)
        two_dims = not isinstance(labels[0], str)
        panels = [("Data", None)] + [(r, self.final[r]) for r in self.rules]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.6), sharey=True, squeeze=False)
        rng = np.random.default_rng(0)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for ax, (name, f) in zip(axes[0], panels):
            if f is None:
                points = [d.y[d.cond == c] for c in range(len(labels))]
                title = f"Data (n = {len(d.y)})"
            else:
                points = [f.seed_fitted[:, c][np.isfinite(f.seed_fitted[:, c])] for c in range(len(labels))]
                import textwrap

                tie = f"; a tie of {len(f.ties)}" if len(f.ties) > 1 else ""
                setting = textwrap.fill(_setting_text(f.best_setting) + tie, 40)
                title = f"{name.upper()} ({f.seed_fitted.shape[0]} seeds)\n{setting}"
            means = np.array([np.mean(p) if len(p) else np.nan for p in points])
            sems = np.array([np.std(p, ddof=1) / np.sqrt(len(p)) if len(p) > 1 else 0.0 for p in points])
            if two_dims:
                firsts = list(dict.fromkeys(l[0] for l in labels))
                seconds = list(dict.fromkeys(l[1] for l in labels))
                for j, s in enumerate(seconds):
                    idx = [labels.index((a, s)) for a in firsts]
                    xs = np.arange(len(firsts)) + (j - (len(seconds) - 1) / 2) * 0.08
                    ax.errorbar(xs, means[idx], yerr=sems[idx], marker="o", capsize=3, color=colors[j % len(colors)],
                                label=s)
                ax.set_xticks(range(len(firsts)), firsts)
                ax.set_xlim(-0.5, len(firsts) - 0.5)
                if f is None:
                    ax.legend(fontsize=8, title=self.spec.conditions[1], title_fontsize=8)
            else:
                for i in range(len(labels)):
                    ax.bar(i, means[i], color=colors[i % len(colors)], alpha=0.35, width=0.7)
                    ax.scatter(i + rng.uniform(-0.22, 0.22, len(points[i])), points[i], s=7,
                               color=colors[i % len(colors)], alpha=0.6, linewidths=0)
                    ax.errorbar(i, means[i], yerr=sems[i], color="black", capsize=4, lw=1.2)
                ax.set_xticks(range(len(labels)), labels)
                ax.set_xlim(-0.6, len(labels) - 0.4)
            ax.axhline(0, color="grey", lw=0.6)
            ax.set_title(title, fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        axes[0][0].set_ylabel(self.spec.measure.replace("_", " "))
        fig.suptitle(f"{self.paradigm}: data and fitted {self.spec.readout} read-out (mean ± SEM)", fontsize=10)
        fig.tight_layout()
        from pcneuro.plotting import save_figure

        return save_figure(fig, path)


def _fitted_ci(f: RuleFit, level: float):
    """The bootstrap interval of the fitted values, or None without a bootstrap."""
    return None if f.boot is None else f.boot.ci("fitted", level)
