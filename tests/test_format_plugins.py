"""A third-party format, pip-installed as a package with a ``syncagg.formats`` entry point.

The test builds a tiny package in a temporary folder, installs it into the
running environment with pip, uses the format by name, by suffix and from
the command, and uninstalls it. The package's build backend is a module
inside the package folder (``backend-path``), so the install needs no
download and no build dependency.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import syncagg as sa
from syncagg.cli import main as cli_main
from tests import jobs

BACKEND = '''
"""A minimal PEP 517 backend that packs one module and its metadata into a wheel."""

import base64
import hashlib
import pathlib
import zipfile

HERE = pathlib.Path(__file__).parent
NAME = (HERE / "NAME").read_text().strip()
VERSION = "1.0"


def _metadata(folder):
    info = folder / f"{NAME}-{VERSION}.dist-info"
    files = {
        "METADATA": f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n",
        "WHEEL": "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
        "entry_points.txt": (HERE / "entry_points.txt").read_text(),
    }
    return info.name, files


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    folder = pathlib.Path(metadata_directory)
    name, files = _metadata(folder)
    (folder / name).mkdir()
    for file, text in files.items():
        (folder / name / file).write_text(text)
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    wheel = f"{NAME}-{VERSION}-py3-none-any.whl"
    info, files = _metadata(pathlib.Path("."))
    files = {f"{info}/{file}": text.encode() for file, text in files.items()}
    files[f"{NAME}.py"] = (HERE / f"{NAME}.py").read_bytes()
    records = []
    with zipfile.ZipFile(pathlib.Path(wheel_directory) / wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{path},sha256={digest},{len(data)}")
        records.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\\n".join(records) + "\\n")
    return wheel
'''

PLUGIN = '''
"""Tab-separated values: a syncagg output format from a plugin package."""

import syncagg as sa


class Tsv(sa.JsonLines):
    """Write the values of each row, separated by tabs."""

    format = "{name}"
    suffixes = ("{suffix}",)
    description = "tab-separated values (test plugin)"

    def write(self, rows):
        text = "".join("\\t".join(str(value) for value in row.values()) + "\\n" for row in rows)
        self._append(text.encode("utf-8"))
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Install the plugin package and return its format name and suffix; uninstall it after."""
    # A name of its own per run, so runs in parallel never share a package.
    token = uuid.uuid4().hex[:8]
    package, name, suffix = f"syncagg_tsv_{token}", f"tsv{token}", f".tsv{token}"
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "NAME").write_text(package)
    (folder / "backend.py").write_text(BACKEND)
    (folder / f"{package}.py").write_text(PLUGIN.format(name=name, suffix=suffix))
    (folder / "entry_points.txt").write_text(f"[syncagg.formats]\n{name} = {package}:Tsv\n")
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = []
            build-backend = "backend"
            backend-path = ["."]
            """
        )
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    install = [*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", str(folder)]
    subprocess.run(install, check=True, capture_output=True, timeout=120)
    importlib.invalidate_caches()
    try:
        yield name, suffix
    finally:
        subprocess.run([*pip, "uninstall", "-y", package], check=True, capture_output=True, timeout=120)
        importlib.invalidate_caches()
        sys.modules.pop(package, None)


def test_plugin_listed(plugin: tuple[str, str]) -> None:
    name, _ = plugin

    formats = sa.available_formats()

    assert formats[name].__name__ == "Tsv"
    assert formats[name].format == name


def test_plugin_by_suffix(tmp_path: Path, plugin: tuple[str, str]) -> None:
    _, suffix = plugin
    path = tmp_path / f"rows{suffix}"

    summary = sa.Aggregator(outputs=[path], workers=2, progress=False).run(jobs.square, range(5))

    assert summary.counts["ok"] == 5
    assert sorted(path.read_text().splitlines()) == ["0\t0", "1\t1", "2\t4", "3\t9", "4\t16"]


def test_plugin_by_name(tmp_path: Path, plugin: tuple[str, str]) -> None:
    name, _ = plugin
    path = tmp_path / "rows.out"
    output = sa.make_output(path, format=name)

    output.open(None)
    output.write([{"a": 1, "b": "x"}])
    output.finish()

    assert path.read_text() == "1\tx\n"


def test_plugin_in_command(plugin: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    name, suffix = plugin

    code = cli_main(["formats"])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert any(line.split()[:2] == [name, suffix] for line in lines)
