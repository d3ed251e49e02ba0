"""Ships the repository's examples/ in the wheel as switchyard/examples (for `switchyard dev`).

examples/ stays the one source of truth (it is what `kubectl apply -f examples/` applies);
the build copies it. Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

EXAMPLES = Path(__file__).resolve().parent / "examples"


class BuildWithExamples(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install finds examples/ in the source tree
            return
        target = Path(self.build_lib) / "switchyard" / "examples"
        target.mkdir(parents=True, exist_ok=True)
        for manifest in sorted(EXAMPLES.glob("*.yaml")):  # none in a build without examples/ (the image)
            shutil.copy2(manifest, target / manifest.name)


setup(cmdclass={"build_py": BuildWithExamples})
