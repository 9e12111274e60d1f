import sys

from anemoi_ckpt_nb.cli import main

sys.exit(main())
