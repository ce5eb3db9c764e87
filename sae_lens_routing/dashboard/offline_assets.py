"""Make sae-dashboard's HTML work offline: inline d3 v6 and plotly instead of loading them from CDNs.

plotly.min.js ships inside the `plotly` pip package. d3 v6 is not on PyPI, so `make` fetches it from the npm
registry at install time (`npm pack d3@6.7.0`) into `<venv>/share/sae_lens_routing/d3.v6.min.js`;
`$SAE_LENS_ROUTING_D3` can point elsewhere. Nothing is fetched at run time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sae_lens_routing.offline.local_model import package_folder

D3_CDN_TAG = '<script src="https://d3js.org/d3.v6.min.js"></script>'
PLOTLY_CDN_TAG = '<script src="https://cdn.plot.ly/plotly-latest.min.js"></script>'


def asset(name: str) -> str:
    """The code of `name` ("d3" or "plotly"), read from where the install put it."""
    d3 = Path(sys.prefix) / "share" / "sae_lens_routing" / "d3.v6.min.js"
    path = Path(os.environ.get("SAE_LENS_ROUTING_D3", d3)) if name == "d3" else None
    path = path or package_folder("plotly") / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(
            f"{name} not found at {path}: run `make venv` (it installs plotly and fetches d3@6.7.0 from the npm "
            "registry), or `npm pack d3@6.7.0` and point SAE_LENS_ROUTING_D3 at package/dist/d3.min.js"
        )
    # a literal "</script" inside the code would end the inline element early
    return "<script>\n" + path.read_text(encoding="utf-8").replace("</script", "<\\/script") + "\n</script>"


def inline_assets(html: str) -> str:
    """Replace the CDN script tags with the libraries' code; fail if sae-dashboard's tags changed."""
    for name, tag in (("d3", D3_CDN_TAG), ("plotly", PLOTLY_CDN_TAG)):
        if tag not in html:
            raise ValueError(f"expected sae-dashboard's CDN tag {tag!r} in the HTML; its template changed")
        html = html.replace(tag, asset(name))
    return html
