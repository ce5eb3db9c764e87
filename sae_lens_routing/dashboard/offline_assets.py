"""Make sae-dashboard's HTML work offline: inline d3 v6 and plotly instead of loading them from CDNs.

plotly.min.js ships inside the `plotly` pip package. d3 v6 is not on PyPI, so `make` fetches it from the npm
registry at install time (`npm pack d3@6.7.0`) into `<venv>/share/sae_lens_routing/d3.v6.min.js`;
`$SAE_LENS_ROUTING_D3` can point elsewhere. Nothing is fetched at run time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sae_lens_routing.offline.package_data import package_folder

D3_CDN_TAG = '<script src="https://d3js.org/d3.v6.min.js"></script>'
PLOTLY_CDN_TAG = '<script src="https://cdn.plot.ly/plotly-latest.min.js"></script>'


def d3_path() -> Path:
    path = Path(
        os.environ.get(
            "SAE_LENS_ROUTING_D3", Path(sys.prefix) / "share" / "sae_lens_routing" / "d3.v6.min.js"
        )
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"d3 v6 not found at {path}: run `make venv` (it fetches d3@6.7.0 from the npm registry), or "
            "`npm pack d3@6.7.0` and point SAE_LENS_ROUTING_D3 at package/dist/d3.min.js"
        )
    return path


def plotly_path() -> Path:
    path = package_folder("plotly") / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found at {path} (pip install plotly)")
    return path


def _inline_script(js: str) -> str:
    # a literal "</script" inside the code would end the inline element early
    return "<script>\n" + js.replace("</script", "<\\/script") + "\n</script>"


def inline_assets(html: str) -> str:
    """Replace the CDN script tags with the libraries' code; fail if sae-dashboard's tags changed."""
    for tag in (D3_CDN_TAG, PLOTLY_CDN_TAG):
        if tag not in html:
            raise ValueError(f"expected sae-dashboard's CDN tag {tag!r} in the HTML; its template changed")
    html = html.replace(D3_CDN_TAG, _inline_script(d3_path().read_text(encoding="utf-8")))
    return html.replace(PLOTLY_CDN_TAG, _inline_script(plotly_path().read_text(encoding="utf-8")))
