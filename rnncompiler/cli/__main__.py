"""`python -m rnncompiler.cli`: the same as the `rnnc` command."""
from . import main

raise SystemExit(main())
