"""Fit report of a census synthesis: CSV tables (synthetic vs census) and figures (PNG)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from diffabm.population.census import CensusSynthesis
from diffabm.population.schema import SEX_LABELS
from diffabm.store import atomic_write_text

FIGURES = ("population_pyramid", "household_size", "school_size", "company_size")


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _pyramid(ax, fit) -> None:
    margins = fit["population_age_sex_ethnicity"].groupby(["sex", "age"])[["target", "synthetic"]].sum()
    for sex, sign in ((1, -1), (0, 1)):
        part = margins.loc[sex] if sex in margins.index.get_level_values(0) else margins.iloc[:0]
        ax.barh(
            part.index,
            sign * part["synthetic"],
            height=1.0,
            alpha=0.5,
            label=f"synthetic {SEX_LABELS[sex]}",
            color="C0" if sex else "C1",
        )
        ax.step(
            sign * part["target"],
            part.index,
            where="mid",
            color="k",
            lw=0.8,
            label="target (census x scale, reweighted if asked)" if sex else None,
        )
    ax.set_xlabel("people (male left, female right)")
    ax.set_ylabel("age")
    ax.set_title("Age-sex pyramid")
    ax.legend(fontsize=8)


def _households(ax, fit) -> None:
    size = fit["household_size"]
    ax.bar(size["size"] - 0.2, size["census_share"], width=0.4, label="census")
    ax.bar(size["size"] + 0.2, size["synthetic_share"], width=0.4, label="synthetic")
    ax.set_xlabel("household size (people)")
    ax.set_ylabel("share of households")
    ax.set_title("Household size distribution")
    ax.legend()


def _schools(axes, fit) -> None:
    schools = fit["schools"]
    for ax, kind in zip(axes, ("school", "kindergarten")):
        part = schools.loc[schools["kind"] == kind]
        bins = np.linspace(0, max(part["enrolled"].max(), part["capacity"].max(), 1) if len(part) else 1, 30)
        ax.hist(part["enrolled"], bins=bins, alpha=0.5, label="enrolled")
        ax.hist(part["capacity"], bins=bins, histtype="step", color="k", label="capacity (max_students x scale)")
        ax.set_xlabel(f"children per {kind}")
        ax.set_ylabel("institutions")
        ax.set_title(f"{kind.capitalize()} sizes")
        ax.legend(fontsize=8)


def _companies(ax, fit) -> None:
    sizes = fit["company_size"]
    census = fit["employment"].loc[lambda d: d["employer_number"] > 0]
    top = max(sizes["size"].max() if len(sizes) else 1, 2)
    bins = np.unique(np.geomspace(1, top + 1, 30).astype(int))
    ax.hist(
        sizes["size"], bins=bins, weights=sizes["companies"], density=True, alpha=0.5, label="synthetic company sizes"
    )
    mean = (census["employee_number"] / census["employer_number"]).clip(lower=1)
    ax.hist(
        mean.clip(upper=top),
        bins=bins,
        weights=census["employer_number"],
        density=True,
        histtype="step",
        color="k",
        label="census employees/employers per SA2 x industry",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("employees per company")
    ax.set_ylabel("density")
    ax.set_title("Company size distribution")
    ax.legend(fontsize=8)


def write_fit_report(synthesis: CensusSynthesis, out_dir: Path) -> list[Path]:
    """Write every fit table as `<name>.csv` and the four figures as PNG into `out_dir`; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        atomic_write_text(out_dir / f"{name}.csv", table.to_csv(index=False)) for name, table in synthesis.fit.items()
    ]
    for name, draw in zip(FIGURES, (_pyramid, _households, _schools, _companies)):
        fig, ax = plt.subplots(1, 2 if draw is _schools else 1, figsize=(11 if draw is _schools else 7, 5))
        try:
            draw(ax, synthesis.fit)
            paths.append(_save(fig, out_dir / f"{name}.png"))
        finally:
            plt.close(fig)
    return paths
