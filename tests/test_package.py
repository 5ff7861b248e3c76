"""restpg as an installable package: its wheel's metadata lists the runtime dependencies with the
pins the checkout is tested with, the extras, one version, the licence and the `restpg` command."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import restpg

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_lists_dependencies_extras_version_licence_and_command(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "restpg", source / "restpg", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("restpg-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(info).decode())
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    required = metadata.get_all("Requires-Dist")
    runtime = [r for r in required if "extra ==" not in r]
    assert sorted(runtime) == sorted(declared) and "torch==2.13.0" in runtime and "gradio==6.31.0" in runtime
    assert {"gpu", "tracking", "dev"} <= set(metadata.get_all("Provides-Extra"))
    assert any(r.startswith("vllm") and 'extra == "gpu"' in r for r in required)
    assert metadata["Version"] == restpg.__version__
    assert metadata["License-Expression"] == "Apache-2.0" and any(n.endswith("licenses/LICENSE") for n in names)
    assert "restpg = restpg.cli:main" in entry_points
    assert "restpg/app/rate_keys.js" in names  # the Rate tab's keyboard script ships with the package


def test_requirements_install_the_package_itself():
    """One list of dependencies: requirements.txt installs the package, whose pins are pyproject's."""
    lines = [
        line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines() if line.strip()
    ]
    assert [line for line in lines if line] == ["-e ."]


def test_restpg_app_takes_the_apps_options():
    result = subprocess.run(
        [sys.executable, "-m", "restpg", "app", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "--allowed-host" in result.stdout and "--trainers" in result.stdout
