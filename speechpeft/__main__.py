"""``python -m speechpeft`` = the ``speechpeft`` command."""

import sys

from .cli import main

sys.exit(main())
