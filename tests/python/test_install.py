"""`pip install ./bindings/python` works offline with Debian's setuptools,
and the installed package finds the library by soname or by
MAILAGENT_EVENTS_LIB, and says how to fix it when it finds neither."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LIB, ROOT


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package installed by pip into a fresh target directory, built
    from a copy of its source (pip builds in the tree it is given)."""
    tmp = tmp_path_factory.mktemp("pip")
    src = tmp / "src"
    shutil.copytree(ROOT / "bindings" / "python", src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_NO_INDEX"] = "1"  # offline: nothing may be fetched
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
         "--no-index", "--disable-pip-version-check", "--root-user-action=ignore",
         "--target", str(target), str(src)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return target


def _header_version() -> str:
    """MAE_VERSION_STRING from include/mailagent/version.h: the library built here."""
    text = (ROOT / "include" / "mailagent" / "version.h").read_text()
    return text.split('MAE_VERSION_STRING "', 1)[1].split('"', 1)[0]


def _python(site: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items()
         if k not in ("MAILAGENT_EVENTS_LIB", "LD_LIBRARY_PATH", "PYTHONPATH")}
    e.update({"PYTHONPATH": str(site)}, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=e, cwd=site.parent, timeout=60)


def test_installed_package_loads_the_library_from_the_variable(site: Path) -> None:
    r = _python(site, "import mailagent_events as m, sys; print(m.__file__); "
                      "print(m.library_version); m.safe_publish('x.y', 1, {}, 'cli')",
                MAILAGENT_EVENTS_LIB=str(LIB))
    assert r.returncode == 0, r.stderr
    path, version = r.stdout.split()
    assert Path(path).is_relative_to(site) and version == _header_version()
    assert (site / "mailagent_events" / "py.typed").exists()


def test_installed_package_finds_the_library_by_soname(site: Path) -> None:
    r = _python(site, "import mailagent_events as m; print(m.library_version)",
                LD_LIBRARY_PATH=str(LIB.parent))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == _header_version()


def test_missing_library_is_an_import_error_that_says_what_to_do(site: Path,
                                                               tmp_path: Path) -> None:
    r = _python(site, "import mailagent_events",
                MAILAGENT_EVENTS_LIB=str(tmp_path / "nope.so"))
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "MAILAGENT_EVENTS_LIB" in r.stderr
    probe = subprocess.run([sys.executable, "-c",
                            "import ctypes; ctypes.CDLL('libmailagent-events.so.2')"],
                           capture_output=True, env={"PATH": os.environ.get("PATH", "")})
    if probe.returncode == 0:
        pytest.skip("libmailagent-events.so.2 is installed system-wide")
    r = _python(site, "import mailagent_events")
    assert r.returncode != 0
    assert "cannot load libmailagent-events.so.2" in r.stderr and "make install" in r.stderr
