"""Ray Job entrypoint for the online service: ``ray job submit --working-dir . -- python
jobs/serve.py --bundle B [--port P] ...``.

Takes exactly the flags of ``rakuten-ray serve``; inside a job ``RAY_ADDRESS`` is set, so the
application is deployed on the job's cluster, and the job runs until it is stopped
(``ray job stop``), which shuts the application down.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python jobs/serve.py` puts jobs/ on sys.path, not the working dir that holds rakuten_ray/.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rakuten_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
