"""``python -m speechbrain_s4m.benchmark``: ``s4m-bench`` (also the scaling section's
worker process, ``--worker``)."""

import sys

from speechbrain_s4m.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
