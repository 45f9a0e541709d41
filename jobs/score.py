"""Ray Job entrypoint for scoring: ``ray job submit --working-dir . -- python jobs/score.py ...``.

Takes exactly the flags of ``rakuten-ray score``; inside a job ``RAY_ADDRESS`` is set, so the
scoring pipeline runs on the job's cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python jobs/score.py` puts jobs/ on sys.path, not the working dir that holds rakuten_ray/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rakuten_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
