"""Render a `raasctl runs report --html` page to a PNG in headless Chromium.

    .venv/bin/python benchmarks/report_screenshot.py [--html FILE] [--png OUT] [--width PX]

Without --html it makes a page first: a mock run of 300 messages drained by two workers
one after the other (`--rate 80` and `--rate 40`, concurrency 4) into the embedded ledger,
in a temporary folder, then `raasctl runs report latest --html`. The PNG (default
report.png) is the page at --width pixels (1000; try 420 for a narrow window), long enough
for the whole page. Chromium comes from the system's package manager (the `chromium`
package); the script exits 2 when none is found.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html: Path, png: Path, *, width: int = 1000, height: int = 2000) -> None:
    """The page at `width` x `height` CSS pixels, as a PNG."""
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no Chromium found (install the chromium package)")
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--hide-scrollbars",
        # The page must stand alone: nothing may be fetched, so nothing is allowed.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--window-size={width},{height}",
        f"--screenshot={png}",
        html.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-500:]}")


def demo_page(folder: Path) -> Path:
    """A real report: a mock run drained by two workers, one after the other."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAASCTL_STATE_DIR": str(folder / "state")}

    def raasctl(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "raasctl", *args],
            cwd=folder,
            env=env,
            check=True,
            capture_output=True,
        )

    raasctl("enqueue-mock", "clientDepositUpdate", "--copies", "30")
    raasctl("worker", "--max-messages", "160", "--rate", "80", "--concurrency", "4")
    raasctl("worker", "--until-empty", "--rate", "40", "--concurrency", "4")
    page = folder / "report.html"
    raasctl("runs", "report", "latest", "--html", str(page))
    return page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, help="the page (default: make one)")
    parser.add_argument("--png", type=Path, default=Path("report.png"))
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args()
    if find_chromium() is None:
        print("no Chromium found: install the chromium package", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as temp:
        page = args.html or demo_page(Path(temp))
        screenshot(page, args.png, width=args.width, height=args.height)
    print(f"{args.png.resolve()}: {args.png.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
