"""Render scmopt HTML reports to PNG with headless Chromium, to look at them as a user would.

    python tools/screenshot_report.py REPORT.html [REPORT.html ...] [--out DIR]
        [--width 1400] [--height 3000] [--check]

Writes DIR/<name>.png per report (DIR defaults to each report's folder). `--check` also
loads each report with a script that measures every SVG text with the browser's own layout
(getBBox) and prints the texts that leave their SVG's view box, and legends that overlap a
plotted line or marker; the exit code is 1 when there are any. Needs Chromium (Debian:
`apt-get install -y chromium`); not run in CI: tests/test_report.py checks the same layout
rules from estimated text widths without a browser.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--hide-scrollbars"]  # fmt: skip

# In the page: texts outside their svg's view box, and legend boxes that intersect the bounding
# box of a plotted polyline segment or marker (bounding boxes from the browser's layout).
CHECK_JS = """
<script>
window.addEventListener('load', () => {
  const out = [];
  const r = (b) => [b.x, b.y, b.x + b.width, b.y + b.height].map((v) => Math.round(v));
  const hit = (a, b) => a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
  document.querySelectorAll('svg').forEach((svg, i) => {
    const vb = svg.viewBox.baseVal;
    const title = (svg.querySelector('.title') || {}).textContent || ('svg ' + i);
    svg.querySelectorAll('text').forEach((t) => {
      if (t.closest('[transform]')) return;
      const b = r(t.getBBox());
      if (b[0] < vb.x || b[1] < vb.y || b[2] > vb.x + vb.width || b[3] > vb.y + vb.height)
        out.push({svg: title, problem: 'text outside view box', text: t.textContent, box: b});
    });
    svg.querySelectorAll('.legend').forEach((g) => {
      const lb = r(g.getBBox());
      svg.querySelectorAll('.series polyline').forEach((pl) => {
        const pts = Array.from(pl.points);
        for (let k = 0; k + 1 < pts.length; k++) {
          const a = pts[k], c = pts[k + 1];
          const seg = [Math.min(a.x, c.x), Math.min(a.y, c.y) - 1, Math.max(a.x, c.x),
                       Math.max(a.y, c.y) + 1];
          if (hit(lb, seg)) out.push({svg: title, problem: 'legend over a line', box: lb});
        }
      });
      svg.querySelectorAll('.series circle').forEach((c) => {
        if (hit(lb, r(c.getBBox()))) out.push({svg: title, problem: 'legend over a marker'});
      });
    });
  });
  const pre = document.createElement('pre');
  pre.id = 'layout-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("chromium not found: apt-get install -y chromium")


def run(args: list[str], profile: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def screenshot(report: Path, png: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        res = run([f"--screenshot={png}", f"--window-size={width},{height}",
                   report.resolve().as_uri()], profile)  # fmt: skip
    if not png.exists():
        sys.exit(f"no screenshot for {report}: {res.stderr.strip()[-500:]}")


def check(report: Path, width: int) -> list[dict]:
    """Layout problems the browser measures (see CHECK_JS)."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / report.name
        page.write_text(report.read_text().replace("</body>", CHECK_JS + "</body>"))
        res = run(["--dump-dom", f"--window-size={width},1000", "--virtual-time-budget=5000",
                   page.as_uri()], str(Path(tmp) / "profile"))  # fmt: skip
    dom = res.stdout
    start = dom.find('<pre id="layout-check">')
    if start < 0:
        sys.exit(f"layout check did not run for {report}: {res.stderr.strip()[-500:]}")
    body = dom[start + len('<pre id="layout-check">') : dom.index("</pre>", start)]
    return json.loads(body.replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="folder for the PNGs (default: next to each report)")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--check", action="store_true", help="measure the layout in the browser")
    a = ap.parse_args()
    problems = 0
    for report in a.reports:
        folder = a.out or report.parent
        folder.mkdir(parents=True, exist_ok=True)
        png = folder / (report.stem + ".png")
        screenshot(report, png, a.width, a.height)
        print(f"{report} -> {png}")
        if a.check:
            found = check(report, a.width)
            problems += len(found)
            for p in found:
                print("  " + json.dumps(p, ensure_ascii=False))
            print(f"  layout check: {len(found)} problem(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
