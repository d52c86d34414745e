"""Screenshots of a workflow report (`make report`: results/<study>/report.html) in a real headless browser.

    .venv/bin/python benchmarks/report_screenshot.py results/default/report.html --out results/default/screenshots

One PNG of the report's first page (the workflow's description and the rule graph) and one per report item (its
caption in the side bar, the item itself in the main view: a figure, an HTML table), each taken by Chromium
(`chromium --headless --screenshot`; Debian: `apt-get install chromium`) on a copy of the report with one line
of script that opens the item, as a click would. Prints one line per screenshot; exits 2 without a browser.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VIEWS = {"image/png": "img", "image/jpeg": "img", "image/svg+xml": "img", "text/html": "html", "application/pdf": "pdf"}


def find_browser() -> str | None:
    """The first Chromium-like browser on the PATH."""
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def report_results(html: str) -> dict[str, dict]:
    """The report's items (`var results = {...};`): path -> name, caption, mime type, data URI, ..."""
    match = re.search(r"var results = (\{.*?\});\n", html, flags=re.DOTALL)
    return json.loads(match.group(1)) if match else {}


def opening_script(path: str, item: dict) -> str:
    """Script that shows `path`'s caption in the side bar and the item in the main view (a figure or table)."""
    view = VIEWS.get(item.get("mime_type", ""))
    content = f"content: {json.dumps(view)}, contentPath: results[{json.dumps(path)}].data_uri, " if view else ""
    return (
        f"<script>setTimeout(function () {{ app.setView({{navbarMode: 'resultinfo', {content}"
        f"resultPath: {json.dumps(path)}}}); }}, 200);</script>\n</body>"
    )


def screenshot(
    browser: str, page: Path, output: Path, size: tuple[int, int] = (1600, 1000), budget_ms: int = 10000
) -> Path:
    """A headless Chromium screenshot of `page` (a local HTML file) after `budget_ms` of virtual time."""
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={size[0]},{size[1]}",
        f"--virtual-time-budget={budget_ms}",
        f"--screenshot={output}",
        page.resolve().as_uri(),
    ]
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    if run.returncode != 0 or not output.exists():
        raise RuntimeError(f"{browser} failed ({run.returncode}): {run.stderr.strip()[-500:]}")
    return output


def screenshots(report: Path, out_dir: Path, browser: str, items: int | None = None) -> list[Path]:
    """The first page and each item (the first `items` only, if given) of `report` as PNGs in `out_dir`."""
    html = report.read_text(encoding="utf-8")
    written = [screenshot(browser, report, out_dir / "00_report.png")]
    results = list(report_results(html).items())[:items]
    with tempfile.TemporaryDirectory() as tmp:
        for index, (path, item) in enumerate(results, start=1):
            page = Path(tmp) / "report.html"
            end = html.rindex("</body>")  # the page's own (the inlined libraries hold the string too)
            page.write_text(html[:end] + opening_script(path, item) + html[end + len("</body>") :], encoding="utf-8")
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.split("/", 2)[-1])
            written.append(screenshot(browser, page, out_dir / f"{index:02d}_{stem}.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="a report.html written by snakemake --report")
    parser.add_argument("--out", type=Path, default=None, help="folder of the PNGs (default: <report>_screenshots)")
    parser.add_argument("--items", type=int, default=None, help="only the first N report items")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print(
            f"report_screenshot: no headless browser ({', '.join(BROWSERS)}) on the PATH; Debian: apt-get install "
            "chromium",
            file=sys.stderr,
        )
        return 2
    out_dir = args.out or args.report.with_name(f"{args.report.stem}_screenshots")
    for path in screenshots(args.report, out_dir, browser, args.items):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
