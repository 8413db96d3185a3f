"""The CloudWatch fixtures (moto seeded with known values) are shared with the library tests."""

from metrics_pipeline_tests.lib.cloudwatch.conftest import cw_config, seeded  # noqa: F401
