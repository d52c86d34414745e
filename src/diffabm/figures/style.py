"""What every figure shares: provenance read from the store and written into the PNG's text chunks (and the
PDF's info) beside it, PNG and PDF from one call, 90% bands (the 5% and 95% quantiles over draws) around the
median, date axes, and the study's interventions (its contact-multiplier periods, by name) shaded with one legend
entry per name. Figures read stores only: the config they shade comes from the store's `config` attribute
(`diffabm.store.provenance`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
import yaml

matplotlib.use("Agg")  # every figure module imports this one: no display needed

BAND = (0.05, 0.95)  # a 90% band: the 5% and 95% quantiles over draws
BAND_LABEL = "90% band (5–95% over draws)"
SUFFIXES = (".png", ".pdf")
PROVENANCE = ("study", "config_sha256", "seed", "git_commit", "diffabm_version", "created", "config")
# colours of the intervention periods, apart from the data's tab10 colours
PERIOD_COLOURS = ("#7f7f7f", "#e6a817", "#8c6bb1", "#41ab5d", "#d95f0e", "#3690c0", "#e7298a", "#a6761d")

# y-axis labels with units of the known observables; the epidemic counts simulated agents, reported cases are people
UNITS = {
    "new_infections": "new infections (agents/day)",
    "infections": "new infections (agents/day)",
    "cases": "symptom onsets (agents/day)",
    "reported_cases": "reported cases (people/day)",
    "hospitalisations": "hospital admissions (agents/day)",
    "deaths": "deaths (agents/day)",
    "stage_counts": "agents in each stage",
    "infections_by_setting": "new infections (agents/day)",
    "x": "price deviation from fundamental $x_t$",
}


def unit_label(name: str) -> str:
    """The y-axis label, with units, of an observable (`<event>_by_<grouping>` as its event's)."""
    if name in UNITS:
        return UNITS[name]
    event, _, grouping = name.partition("_by_")
    if grouping and event in UNITS:
        return UNITS[event]
    return name.replace("_", " ")


def title_of(name: str) -> str:
    return name.replace("_", " ")


# ---------------------------------------------------------------------------------------------------- provenance
def config_of(ds: xr.Dataset) -> dict:
    """The resolved config a store was written with (its `config` attribute, YAML), or {} if it has none."""
    text = ds.attrs.get("config")
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return config if isinstance(config, dict) else {}


def provenance_of(ds: xr.Dataset, **extra: str) -> dict[str, str]:
    """What a figure of `ds` says about where it came from, as PNG text: the study, the sha256 of the resolved
    config and the config itself, the seed, the git commit, diffabm's version, when the store was written;
    plus `extra` (e.g. `Source`, the store's path)."""
    config = ds.attrs.get("config", "")
    config = config if isinstance(config, str) else str(config)
    values = {
        "study": str(config_of(ds).get("study", "")),
        "config_sha256": hashlib.sha256(config.encode()).hexdigest() if config else "",
        "config": config,
        **{key: str(ds.attrs.get(key, "")) for key in ("seed", "git_commit", "diffabm_version", "created")},
    }
    return {**{key: values[key] for key in PROVENANCE}, **{key: str(value) for key, value in extra.items()}}


def _pdf_info(fig, provenance: Mapping[str, str]) -> dict[str, str]:
    """The PDF's info dictionary (its keys are fixed): the title, and the provenance but the config as `Subject`."""
    title = fig._suptitle.get_text() if fig._suptitle is not None else ""
    line = "; ".join(f"{key}={value}" for key, value in provenance.items() if key != "config" and value)
    return {
        "Title": " ".join(title.split()),
        "Subject": line,
        "Keywords": "diffabm",
        "Creator": f"diffabm {provenance.get('diffabm_version', '')}".strip(),
    }


def save_figure(
    fig, path: str | Path, provenance: Mapping[str, str], suffixes: Sequence[str] = SUFFIXES, dpi: int = 120
) -> Path:
    """Save `fig` once per suffix (PNG and PDF with the same stem by default), each atomically (a temporary file,
    then rename): the PNG with `provenance` as text chunks, the PDF with it in its info; close it. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in suffixes:
        target = path.with_suffix(suffix)
        tmp = target.with_name(f".{target.stem}.tmp{suffix}")
        metadata = dict(provenance) if suffix == ".png" else _pdf_info(fig, provenance) if suffix == ".pdf" else None
        fig.savefig(tmp, dpi=dpi, metadata=metadata)
        tmp.replace(target)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------- bands
def quantile_band(values, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(5%, 50%, 95%) quantiles of `values` over `axis` (the draws): the 90% band and the median."""
    low, median, high = np.nanquantile(np.asarray(values, dtype=float), [BAND[0], 0.5, BAND[1]], axis=axis)
    return low, median, high


def plot_band(
    ax,
    x,
    draws,
    *,
    color=None,
    label: str | None = "median",
    band_label: str | None = BAND_LABEL,
    alpha: float = 0.25,
    lw: float = 1.5,
    **line,
):
    """The median over draws (a line) and its 90% band (5–95%, shaded) of `draws` (draw first, or an xarray with
    a `draw` dimension). Returns (line, band)."""
    if isinstance(draws, xr.DataArray):
        draws = draws.transpose("draw", ...).values
    low, median, high = quantile_band(draws, axis=0)
    (median_line,) = ax.plot(x, median, color=color, lw=lw, label=label, **line)
    band = ax.fill_between(x, low, high, color=median_line.get_color(), alpha=alpha, lw=0, label=band_label)
    return median_line, band


def plot_observed(ax, x, values, label: str = "observed", **style):
    """Observed data as black dots, beside a predictive."""
    return ax.plot(x, values, "o", color="black", ms=2.5, label=label, zorder=5, **style)


# ---------------------------------------------------------------------------------------------------- time axes
def is_dates(time) -> bool:
    return np.issubdtype(np.asarray(time).dtype, np.datetime64)


def format_time_axis(ax, time, step_label: str = "time step") -> None:
    """Dates (month ticks, the year as an offset) and the label `date` on a datetime axis, `step_label` else."""
    if is_dates(time):
        locator = mdates.AutoDateLocator(minticks=3, maxticks=7)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(
            mdates.ConciseDateFormatter(  # "15 Aug", "Sep", ..., the year as the offset
                locator,
                formats=["%Y", "%b", "%d %b", "%H:%M", "%H:%M", "%S.%f"],
                zero_formats=["", "%Y", "%b", "%d %b", "%H:%M", "%H:%M"],
                offset_formats=["", "%Y", "%Y", "%Y", "%Y", "%Y"],
            )
        )
        ax.set_xlabel("date")
    else:
        ax.set_xlabel(step_label)


# ---------------------------------------------------------------------------------------------------- interventions
@dataclass(frozen=True)
class Span:
    """One named intervention period: from `start` to `end` (exclusive), dates or day numbers."""

    name: str
    start: object
    end: object
    detail: str = ""

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


def _as_date(value) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None


def _day(value, start_date: dt.date | None) -> int | None:
    """A period's bound as a day number: an int as it is, an ISO date relative to `start_date`."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    date = _as_date(value)
    return None if date is None or start_date is None else (date - start_date).days


def _default_name(spec: Mapping) -> str:
    layers = spec.get("layers") or ["all"]
    return f"{'+'.join(map(str, layers))} contacts ×{float(spec.get('multiplier', 1.0)):g}"


def intervention_spans(config: Mapping) -> list[Span]:
    """The contact-multiplier periods of a resolved config, one `Span` per name (a spec's `name`, or its layers and
    multiplier), overlapping or adjoining periods of one name merged, in order of their start. Bounds are dates
    when the config has a `start_date` (day 0), else day numbers; an open end is the last simulated day's end."""
    model = config.get("model") or {}
    specs = model.get("interventions") or config.get("interventions") or []
    start_date = _as_date(model.get("start_date", config.get("start_date")))
    days = model.get("days")
    periods: dict[str, list[list]] = {}
    for spec in specs:
        if not isinstance(spec, Mapping) or spec.get("kind") != "contact_multiplier":
            continue
        start = _day(spec.get("start"), start_date)
        end = _day(spec["end"], start_date) if spec.get("end") is not None else days
        if start is None or end is None or end <= start:
            continue
        layers = "+".join(map(str, spec.get("layers") or ["all"]))
        detail = f"{layers} ×{float(spec.get('multiplier', 1.0)):g}" if spec.get("name") else ""
        periods.setdefault(str(spec.get("name") or _default_name(spec)), []).append([start, end, detail])
    spans = []
    for name, intervals in periods.items():
        intervals.sort()
        merged = [[*intervals[0][:2], [intervals[0][2]]]]
        for start, end, detail in intervals[1:]:
            if start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
                merged[-1][2].append(detail)
            else:
                merged.append([start, end, [detail]])
        for start, end, details in merged:
            if start_date is not None:
                start, end = (np.datetime64(start_date, "D") + np.timedelta64(day, "D") for day in (start, end))
            spans.append(Span(name, start, end, ", ".join(dict.fromkeys(d for d in details if d))))
    return sorted(spans, key=lambda span: span.start)


def span_colours(spans: Iterable[Span]) -> dict[str, str]:
    """A colour per intervention name, in order of first appearance."""
    names = list(dict.fromkeys(span.name for span in spans))
    return {name: PERIOD_COLOURS[k % len(PERIOD_COLOURS)] for k, name in enumerate(names)}


def phases(spans: Sequence[Span]) -> list[Span]:
    """The periods cut where any begins or ends, each piece given to the period in effect that began last (the
    latest change), adjoining pieces of one name joined: what to shade so that overlapping periods do not mix."""
    bounds = sorted({bound for span in spans for bound in (span.start, span.end)})
    pieces: list[Span] = []
    for start, end in itertools.pairwise(bounds):
        active = [span for span in spans if span.start <= start < span.end]
        if not active:
            continue
        latest = max(active, key=lambda span: span.start)  # max keeps the first of equal starts
        if pieces and pieces[-1].name == latest.name and pieces[-1].end == start:
            pieces[-1] = Span(latest.name, pieces[-1].start, end, latest.detail)
        else:
            pieces.append(Span(latest.name, start, end, latest.detail))
    return pieces


def shade_interventions(ax, spans: Sequence[Span], alpha: float = 0.15) -> dict[str, object]:
    """Shade the intervention periods over the whole height of `ax`, behind the data, a colour per name; where
    periods overlap, the one that began last (`phases`), with a thin line where each begins. Returns a patch per
    name shaded."""
    colours = span_colours(spans)
    handles = {}
    for piece in phases(spans):
        handles.setdefault(
            piece.name, ax.axvspan(piece.start, piece.end, color=colours[piece.name], alpha=alpha, lw=0, zorder=0)
        )
    for span in spans:
        ax.axvline(span.start, color=colours[span.name], lw=0.8, alpha=0.8, zorder=0.5)
    return handles


def intervention_handles(spans: Sequence[Span], alpha: float = 0.25) -> tuple[list, list[str]]:
    """Legend handles and labels, one per intervention name: the name and its multipliers by layer."""
    from matplotlib.patches import Patch

    colours = span_colours(spans)
    labels = []
    for name in colours:
        details = ", ".join(
            dict.fromkeys(part for span in spans if span.name == name for part in span.detail.split(", ") if part)
        )
        labels.append(name.replace("_", " ") + (f" ({details})" if details else ""))
    return [Patch(facecolor=colour, alpha=alpha, edgecolor="none") for colour in colours.values()], labels


def intervention_legend(fig, spans: Sequence[Span], ncols: int | None = None):
    """A legend of the shaded periods under the figure (constrained layout), one entry per name."""
    if not spans:
        return None
    handles, labels = intervention_handles(spans)
    return fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=ncols or min(len(labels), 3),
        fontsize="small",
        title="interventions (contact multipliers by layer), shaded from when each began",
        title_fontsize="small",
        frameon=False,
    )
