import sys

from mpl_core.service.cli import main

sys.exit(main())
