"""``python -m bridge``: the ``rbridge`` command."""

from ._cli import main

raise SystemExit(main())
