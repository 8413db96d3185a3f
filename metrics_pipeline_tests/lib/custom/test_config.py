"""`config/api.yaml`: the SPEC §12 defaults, errors naming the file and key, the back-window rule."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from metrics_pipeline.lib.custom.config import CONFIG_ENV, ApiConfig, load_config
from metrics_pipeline.lib.warehouse import retention
from metrics_pipeline.lib.yaml_config import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_are_the_spec_limits(monkeypatch):
    monkeypatch.setenv("METRICS_PIPELINE_LANDING", "/srv/landing")
    config = ApiConfig()
    assert (config.max_body_bytes, config.max_batch_items) == (10 * 1024 * 1024, 10_000)
    assert config.name_pattern == r"[A-Za-z_][A-Za-z0-9_.:-]{0,199}"
    assert config.metadata_key_pattern == r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}"
    assert (config.max_metadata_keys, config.max_metadata_value_chars, config.max_event_text_bytes) == (32, 1024, 65536)
    assert (config.ts_back, config.ts_ahead) == (timedelta(days=6), timedelta(minutes=5))
    assert (config.rate_limit.requests_per_second, config.rate_limit.items_per_second,
            config.rate_limit.burst_seconds) == (200, 500_000, 2)
    assert config.landing == "/srv/landing"
    assert config.wait_for_upload is False


def test_a_missing_file_means_the_defaults_and_the_environment_names_the_file(tmp_path, monkeypatch):
    assert load_config(tmp_path / "absent.yaml").max_batch_items == 10_000
    path = tmp_path / "api.yaml"
    path.write_text("max_batch_items: 500\nts_back: 2d\nrate_limit: {items_per_second: 1000}\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    config = load_config()
    assert (config.max_batch_items, config.ts_back, config.rate_limit.items_per_second) == (500, timedelta(days=2), 1000)
    assert config.rate_limit.requests_per_second == 200


def test_the_example_file_documents_exactly_the_defaults(monkeypatch):
    monkeypatch.delenv("METRICS_PIPELINE_LANDING", raising=False)
    example = load_config(ROOT / "config" / "api.example.yaml")
    assert example.model_dump() == ApiConfig().model_dump()
    text = (ROOT / "config" / "api.example.yaml").read_text()
    for key in [*ApiConfig.model_fields, *ApiConfig.model_fields["rate_limit"].annotation.model_fields]:
        assert f"{key}:" in text, f"{key} is not documented in config/api.example.yaml"


@pytest.mark.parametrize(("yaml", "expected"), [
    ("max_metadata_keys: -1", "max_metadata_keys: Input should be greater than or equal to 0"),
    ("ts_back: 6w", "ts_back: '6w' is not a duration like 30s, 5m, 1h or 7d"),
    ("ts_ahead: 2d", "ts_ahead: must be between 0s and 1d"),
    ("name_pattern: '[a-'", "name_pattern: not a regular expression"),
    ("rate_limit: {burst: 2}", "rate_limit.burst: unknown key"),
    ("max_batch_itmes: 10", "max_batch_itmes: unknown key"),
    ("wait_for_upload: maybe", "wait_for_upload: Input should be a valid boolean"),
])
def test_errors_name_the_file_and_the_key(tmp_path, yaml, expected):
    path = tmp_path / "api.yaml"
    path.write_text(yaml + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_the_default_back_window_fits_the_default_raw_retention():
    ApiConfig().check_back_window(retention.RetentionConfig().points)
    ApiConfig().check_back_window(7)


@pytest.mark.parametrize("raw_retention", [6.5, 6, timedelta(days=3)])
def test_a_back_window_not_a_day_shorter_than_raw_retention_refuses_to_start(tmp_path, raw_retention):
    path = tmp_path / "api.yaml"
    path.write_text("ts_back: 6d\n")
    with pytest.raises(ConfigError, match=r"api\.yaml: ts_back: 6 days must be at least one day shorter than the raw "
                                          r"retention \(points: .*\)"):
        load_config(path).check_back_window(raw_retention)


def test_a_shorter_back_window_fits_a_shorter_retention(tmp_path):
    path = tmp_path / "retention.yaml"
    path.write_text("points: 3d\n")
    ApiConfig(ts_back="2d").check_back_window(retention.load_config(path).points)
