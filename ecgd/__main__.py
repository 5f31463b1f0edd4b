"""``python -m ecgd`` is the same as the ``ecgd`` console script."""
import sys

from ecgd.cli import main

sys.exit(main())
