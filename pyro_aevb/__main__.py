import sys

from pyro_aevb.experiment.cli import main

sys.exit(main())
