"""In-tree PEP 517 backend: maturin, with libclang from the `libclang` wheel.

libuv-sys2 generates its bindings with bindgen, which needs libclang at build
time. `pyproject.toml` lists the `libclang` wheel as a build requirement; this
module points LIBCLANG_PATH (and BINDGEN_EXTRA_CLANG_ARGS) at it, unless the
user set them, then hands every hook to maturin unchanged.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import uvrs_libclang  # noqa: E402

os.environ.update(uvrs_libclang.libclang_env(uvrs_libclang.native_dir_of_clang_package()))

import maturin  # noqa: E402

_HOOKS = (
    "build_wheel",
    "build_sdist",
    "build_editable",
    "get_requires_for_build_wheel",
    "get_requires_for_build_sdist",
    "get_requires_for_build_editable",
    "prepare_metadata_for_build_wheel",
    "prepare_metadata_for_build_editable",
)

# Re-export only the hooks maturin has, so frontends still see optional hooks as absent.
for _name in _HOOKS:
    if hasattr(maturin, _name):
        globals()[_name] = getattr(maturin, _name)

__all__ = [name for name in _HOOKS if name in globals()]
