"""Settings: the documentation's table (docs/settings.md) is generated from them, so it cannot drift."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings, settings_table

SETTINGS_PAGE = Path(__file__).parents[1] / "docs" / "settings.md"


def test_the_settings_page_has_the_current_table() -> None:
    table = settings_table()
    assert table in SETTINGS_PAGE.read_text(encoding="utf-8"), (
        "docs/settings.md's settings table is out of date; replace it with the output of\n"
        "  .venv/bin/python -c 'from service.config import settings_table as t; print(t(), end=\"\")'\n"
        f"which is:\n{table}"
    )


def test_the_table_names_every_setting_with_its_variable_and_default() -> None:
    rows = settings_table().splitlines()[2:]
    assert len(rows) == len(Settings.model_fields)
    assert "| `data_dir` | `FLEET_DATA_DIR` | `fleet-data` |" in settings_table()
    assert "| `max_resident` | `FLEET_MAX_RESIDENT` | none |" in settings_table()
    assert "| `log_json` | `FLEET_LOG_JSON` | `false` |" in settings_table()


def test_the_variables_named_are_the_ones_read(monkeypatch) -> None:
    monkeypatch.setenv("FLEET_MAX_BULK", "7")
    monkeypatch.setenv("FLEET_LOG_JSON", "1")
    settings = Settings()
    assert (settings.max_bulk, settings.log_json) == (7, True)
