import sys

from sae_lens_routing.cli.main import main

sys.exit(main())
