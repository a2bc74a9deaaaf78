"""Ships the R worker's sources (rserver/) inside the wheel, as
bridge/rserver_src, for ``rbridge install-worker``. Everything else is in
pyproject.toml. An editable install uses the checkout's rserver/ directly."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCES = Path(__file__).resolve().parent / "rserver"
BUILT = ("*.o", "*.so", "*.dll")


class BuildWithWorkerSources(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "bridge" / "rserver_src"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(SOURCES, target, ignore=shutil.ignore_patterns(*BUILT))


setup(cmdclass={"build_py": BuildWithWorkerSources})
