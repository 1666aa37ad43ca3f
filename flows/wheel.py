"""Build the `somemodel` wheel and name it by its content."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from uv import find_uv_bin

from flows.compute.base import WheelRef
from flows.datastore.base import sha256_of_file
from flows.settings import REPO_ROOT

SOMEMODEL_SOURCE = REPO_ROOT / "somemodel"


class WheelBuildError(RuntimeError):
    """Building the wheel failed; the message has the build tool's output."""


def build_wheel(source_dir: Path, out_dir: Path) -> WheelRef:
    """Build a wheel of `source_dir` into `out_dir/{sha256}/` and describe it.

    hatchling writes reproducible wheels (fixed timestamps), so unchanged
    sources give the same bytes, the same sha256 and the same blob name.
    """
    with tempfile.TemporaryDirectory(prefix="wheel-build-") as tmp:
        result = subprocess.run(
            [find_uv_bin(), "build", "--wheel", "--quiet", "--out-dir", tmp, str(source_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise WheelBuildError(
                f"building a wheel from {source_dir} failed (exit {result.returncode}):\n"
                + (result.stderr or result.stdout)[-4000:]
            )
        sha256 = sha256_of_file(wheels[0])
        target = out_dir / sha256 / wheels[0].name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(wheels[0], target)
    return WheelRef(
        local_path=target, sha256=sha256, datastore_path=f"wheels/{sha256}/{target.name}"
    )
