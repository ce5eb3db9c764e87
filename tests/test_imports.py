"""Training, loading and analysis never need sae-dashboard: it is installed with --no-deps and its pins may
not hold in a user's environment, so only the `dashboard` command may import it."""

from __future__ import annotations

import subprocess
import sys

NO_DASHBOARD = """
import sys
sys.modules["sae_dashboard"] = None  # any `import sae_dashboard...` now raises ImportError
import sae_lens_routing
import sae_lens_routing.analysis.evals, sae_lens_routing.analysis.feature_contexts
import sae_lens_routing.analysis.splice
import sae_lens_routing.dashboard.report
import sae_lens_routing.cli.main, sae_lens_routing.loading.releases, sae_lens_routing.training.run_config
"""


def test_package_imports_without_sae_dashboard():
    done = subprocess.run([sys.executable, "-c", NO_DASHBOARD], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
