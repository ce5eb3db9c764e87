import sys

from sae_lens_routing.cli import main

sys.exit(main())
