"""The architecture holds: every import in ``service/`` points down its layers, with no circles.

The contracts are ``.importlinter`` at the root of the checkout (the source of truth that
``docs/architecture.md`` draws). Imports inside functions and under ``TYPE_CHECKING`` count too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.architecture_map import layers, render

ROOT = Path(__file__).parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), str(config), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_import_points_down_its_layers() -> None:
    result = lint_imports(ROOT / ".importlinter")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert result.stdout.count("KEPT") == (ROOT / ".importlinter").read_text().count(
        "[importlinter:contract:"
    )


def test_an_arrow_back_up_breaks_the_layers(tmp_path: Path) -> None:
    """The check has teeth: over the same code, layers that put ``api`` below ``fleet`` fail, naming
    the HTTP layer's imports of the fleet as arrows that run back up."""
    contracts = (ROOT / ".importlinter").read_text()
    assert "\n    api\n" in contracts and "\n    fleet\n" in contracts
    swapped = contracts.replace("\n    api\n", "\n    <api>\n").replace("\n    fleet\n", "\n    api\n")
    config = tmp_path / "contracts.ini"
    config.write_text(swapped.replace("\n    <api>\n", "\n    fleet\n"))
    result = lint_imports(config)
    assert result.returncode != 0
    assert "service.api is not allowed to import service.fleet" in result.stdout


def test_the_map_is_drawn_from_the_contracts() -> None:
    drawn = render(layers((ROOT / ".importlinter").read_text()))
    assert (ROOT / "docs" / "architecture.svg").read_text() == drawn, (
        "docs/architecture.svg does not show .importlinter's layers; draw it again with\n"
        "    .venv/bin/python -m tests.architecture_map > docs/architecture.svg"
    )


def test_the_map_names_only_files_that_exist() -> None:
    """The architecture page's paths (``api/errors.py``, ``cluster/front/routes/``) are under ``service/``,
    or at the root of the checkout: a module moved or renamed without the map breaks this."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"`([a-z_]+(?:/[a-z_.]+)*(?:\.py|/))`", page))
    assert len(paths) > 10
    missing = sorted(p for p in paths if not (ROOT / "service" / p).exists() and not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names paths that are not in the checkout: {missing}"
