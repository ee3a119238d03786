"""Render a report.html to a PNG with headless Chromium, to look at the report for regressions.

    python scripts/screenshot_report.py fronts/smoke/report.html [out.png] [--width 1280 --height 2400]

Same as ``paretoalign report FOLDER --screenshot`` for an existing page.  Needs Debian's
``chromium`` (or ``$PARETOALIGN_CHROMIUM`` pointing at a Chromium/Chrome binary).
"""

import argparse

from paretoalign.fronts.html_report import screenshot

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("html")
    p.add_argument("png", nargs="?", default=None)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=2400)
    a = p.parse_args()
    print(screenshot(a.html, a.png or a.html.rsplit(".", 1)[0] + ".png", a.width, a.height))
