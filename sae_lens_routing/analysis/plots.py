"""Charts of a RouteSAE's routing (used by evaluation and the model card)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from sae_lens_routing.atomic import atomic_write_bytes


def render_routing_share_chart(shares: Sequence[float], hook_names: Sequence[str], path: str | Path) -> Path:
    """A bar chart of the share of tokens routed to each layer, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [h.removesuffix(".hook_resid_post").removeprefix("blocks.") for h in hook_names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(labels) + 1.5), 3.0), dpi=100)
    ax.bar(range(len(shares)), [100 * s for s in shares], color="#4C72B0")
    ax.set_xticks(range(len(labels)), labels, rotation=0 if len(labels) <= 12 else 60)
    ax.set(xlabel="routed layer (block)", ylabel="% of tokens", title="Routing share per layer")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
