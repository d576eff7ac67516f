"""Hatch build hook: compile daedalus.proto._proto with cffi on every wheel build.

- editable (what hatch workspaces install): the extension is compiled into
  src/daedalus/proto/ next to __init__.py, because an editable install imports
  the package from src/ (hatchling's .pth puts src/ on sys.path). The file is
  git-ignored (.gitignore here) and excluded from wheels' file selection.
- standard wheel: compiled into a temporary directory and force-included as
  daedalus/proto/<name>.so; the wheel is tagged for this interpreter and
  platform (not pure Python).

src/daedalus/proto/_build.py does the work; it is loaded by file path because
the package itself cannot be imported before its extension exists.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGE_DIR = Path("src", "daedalus", "proto")


def load_build_module(root: str) -> ModuleType:
    path = Path(root, PACKAGE_DIR, "_build.py")
    spec = importlib.util.spec_from_file_location("_daedalus_proto_build", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CustomBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        self._tmp: str | None = None
        if self.target_name != "wheel":
            return
        build = load_build_module(self.root)
        if version == "editable":
            built = build.compile_extension(Path(self.root, PACKAGE_DIR))
        else:
            self._tmp = tempfile.mkdtemp(prefix="daedalus-proto-wheel-")
            built = build.compile_extension(Path(self._tmp))
            build_data["force_include"][str(built)] = f"daedalus/proto/{built.name}"
        self.app.display_info(f"daedalus-protocol: compiled {built.name} ({version})")
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if getattr(self, "_tmp", None):
            shutil.rmtree(str(self._tmp), ignore_errors=True)
