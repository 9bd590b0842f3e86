"""``import modal_vlm`` applies modAL's shims (:mod:`modal_vlm.compat`) without importing modAL.

The shims change names inside modAL's modules, so they need those modules; importing modAL
(and with it scikit-learn and pandas) on ``import modal_vlm`` would cost a second, and
``modal-vlm --help`` must stay instant. Instead, ``import modal_vlm`` puts a finder on
:data:`sys.meta_path` that watches the ``modAL`` package: each modAL module is loaded by its
own loader, then the shims are applied to the modAL modules imported so far. The one
module that cannot even be imported without a shim, :mod:`modAL.expected_error` (it reads
NumPy's removed ``np.float`` while it executes), executes with the alias present. modAL
modules imported before ``modal_vlm`` are patched at once. Either way, whatever the import
order, a user's ``import modal_vlm`` makes modAL work as :mod:`modal_vlm.compat` says.
"""
from __future__ import annotations

import importlib
import sys

PACKAGE = "modAL"


class _PatchingLoader:
    """The module's own loader; after it executes a modAL module, the shims are applied."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # get_source, is_package, resource readers...: the real loader's
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        compat = importlib.import_module("modal_vlm.compat")
        with compat.np_float_alias(module.__name__):
            self._loader.exec_module(module)
        compat.patch_imported_modal()


class ModalFinder:
    """Finds nothing itself: hands modAL's modules, as the other finders find them, to
    :class:`_PatchingLoader`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != PACKAGE and not fullname.startswith(PACKAGE + "."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Watch modAL's imports (once per process); patch the modAL modules already imported."""
    if not any(isinstance(finder, ModalFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, ModalFinder())
    if PACKAGE in sys.modules:
        importlib.import_module("modal_vlm.compat").patch_modal()
