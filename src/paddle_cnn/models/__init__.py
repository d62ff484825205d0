"""Architectures, one per module; importing this package registers them all.

Every module in this folder is imported (pkgutil lists them), so a new architecture only needs a
new file with @register_model factories: no central list to keep in sync.
"""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
