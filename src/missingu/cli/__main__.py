"""``python -m missingu.cli ...``: the same as the ``missingu`` command."""

from . import main

raise SystemExit(main())
