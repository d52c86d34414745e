"""Items of the workflow's HTML report (`snakemake --report`, `make report`) that no stage writes: the study's
resolved config, the benchmark records of its jobs as one table, and CSV tables as HTML pages (the report shows
HTML inline; a CSV only as a download)."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from diffabm.store import atomic_write_text, provenance

# Snakemake's benchmark columns (`benchmark:` TSVs): wall seconds, its h:m:s, memory in MB, I/O in MB, the mean
# CPU load in percent and the CPU seconds.
BENCHMARK_COLUMNS = {
    "s": "wall_s",
    "h:m:s": "wall",
    "max_rss": "max_rss_mb",
    "max_vms": "max_vms_mb",
    "max_uss": "max_uss_mb",
    "max_pss": "max_pss_mb",
    "io_in": "io_in_mb",
    "io_out": "io_out_mb",
    "mean_load": "mean_load_percent",
    "cpu_time": "cpu_s",
}
GATHER_RULE = "benchmark_table"  # the gathering job's own record is of its previous run: left out
HTML_COLUMNS = [
    "rule",
    "wildcards",
    "wall_s",
    "cpu_s",
    "mean_load_percent",
    "max_rss_mb",
    "io_in_mb",
    "io_out_mb",
    "finished",
]  # the page's (the CSV has them all)

STYLE = """body{font-family:sans-serif;margin:1em;color:#222}
table{border-collapse:collapse;font-size:0.85em}th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
tr:nth-child(even){background:#f7f7f7}p{max-width:60em}pre{font-size:0.85em}"""


def write_config(cfg: DictConfig, output_path: str | Path, html_path: str | Path | None = None) -> Path:
    """Stage `resolved_config`: the study's resolved config as YAML, headed by its provenance (commit, versions),
    and the same as an HTML page (the report shows a page inline, a YAML file only as a download)."""
    record = provenance(cfg, int(cfg.seed))
    header = [
        f"# Resolved config of study {cfg.study} (seed {record['seed']}), written {record['created']}",
        f"# diffabm {record['diffabm_version']}, git commit {record['git_commit']}",
        "# packages: " + ", ".join(f"{name} {version}" for name, version in record["package_versions"].items()),
    ]
    text = "\n".join(header) + "\n" + OmegaConf.to_yaml(cfg, resolve=True)
    if html_path is not None:
        title = f"Resolved config of study {cfg.study}"
        atomic_write_text(
            html_path,
            f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><h2>{html.escape(title)}</h2>"
            f"<pre>{html.escape(text)}</pre></body></html>\n",
        )
    return atomic_write_text(output_path, text)


def benchmark_records(benchmarks_dir: str | Path) -> pd.DataFrame:
    """One row per record of the `<rule>[-<wildcard>...].tsv` files under `benchmarks_dir`: rule, wildcards, when the
    record was written (UTC), and Snakemake's measurements (renamed with their units)."""
    benchmarks_dir = Path(benchmarks_dir)
    rows = []
    for path in sorted(benchmarks_dir.rglob("*.tsv")):
        name = path.relative_to(benchmarks_dir).with_suffix("").as_posix()
        rule, _, wildcards = name.partition("-")
        if rule == GATHER_RULE:
            continue
        table = pd.read_csv(path, sep="\t").rename(columns=BENCHMARK_COLUMNS)
        finished = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.insert(0, "finished", finished)
        table.insert(0, "wildcards", wildcards.replace("-", " "))
        table.insert(0, "rule", rule)
        rows.append(table)
    columns = ["rule", "wildcards", "finished", *BENCHMARK_COLUMNS.values()]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)


def html_page(title: str, table: pd.DataFrame, note: str = "") -> str:
    """A self-contained HTML page of `table` (no scripts, no external files)."""
    body = table.to_html(index=False, float_format=lambda value: f"{value:.4g}", na_rep="", border=0)
    paragraph = f"<p>{html.escape(note)}</p>" if note else ""
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h2>{html.escape(title)}</h2>{paragraph}{body}</body></html>\n"
    )


def write_benchmark_table(benchmarks_dir: str | Path, output_path: str | Path, html_path: str | Path) -> Path:
    """Stage `benchmark_table`: the benchmark records of a study's jobs as one CSV and an HTML page (slowest first)."""
    records = benchmark_records(benchmarks_dir)
    atomic_write_text(output_path, records.to_csv(index=False))
    if len(records):
        slowest = records.sort_values("wall_s", ascending=False)[[c for c in HTML_COLUMNS if c in records]]
        note = (
            f"{len(records)} jobs: {records['wall_s'].sum():.0f} s of wall time, {records['cpu_s'].sum():.0f} s of "
            f"CPU time in all; the largest peak memory (RSS) {records['max_rss_mb'].max():.0f} MB. Times finished "
            f"in UTC; all columns in {Path(output_path).name}."
        )
    else:
        slowest, note = records, "No benchmark records."
    atomic_write_text(html_path, html_page(f"Benchmarks of {Path(benchmarks_dir).parent.name}", slowest, note))
    return Path(output_path)


def write_html_table(table_path: str | Path, output_path: str | Path) -> Path:
    """Stage `recovery_html`: a CSV table as a self-contained HTML page."""
    table = pd.read_csv(table_path)
    title = f"{Path(table_path).stem.replace('_', ' ').capitalize()} ({Path(table_path).name})"
    return atomic_write_text(output_path, html_page(title, table, f"From {table_path}."))
