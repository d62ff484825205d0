"""`python -m paddle_cnn ...` (also what paddle.distributed.launch runs)."""

import sys

from .cli import main

sys.exit(main())
