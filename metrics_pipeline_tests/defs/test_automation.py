"""defs/automation.py: the hours an API source's schedule and catch-up sensor request (through CloudWatch's,
which `api_source_automation` makes), and the automation condition of the derived assets (rollups, SLA),
on stand-in assets."""

from datetime import datetime, timedelta, timezone

import dagster as dg

from metrics_pipeline.defs.automation import closed_hour_requests, derived_condition
from metrics_pipeline.defs.cloudwatch.schedules import cloudwatch_hourly
from metrics_pipeline.defs.partitions import hourly_partitions


def test_the_schedule_fetches_the_closed_hour_and_reruns_an_earlier_one():
    requests = closed_hour_requests(datetime(2026, 11, 22, 10, 5, tzinfo=timezone.utc), late_rerun_hours=2)
    assert [(r.partition_key, r.tags["metrics_pipeline/reason"]) for r in requests] == [
        ("2026-11-22-09:00", "closed"), ("2026-11-22-07:00", "late")]
    assert cloudwatch_hourly.cron_schedule == "5 * * * *"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 22, 0, 5, tzinfo=timezone.utc))
    keys = [r.partition_key for r in cloudwatch_hourly(context)]
    assert keys == ["2026-11-21-23:00", "2026-11-21-21:00"]


def test_catchup_requests_recent_closed_hours_never_materialised():
    from metrics_pipeline.defs.automation import missing_closed_hours
    from metrics_pipeline.defs.cloudwatch.schedules import cloudwatch_catchup_sensor

    now = datetime(2026, 11, 22, 10, 7, tzinfo=timezone.utc)
    keys = missing_closed_hours(now, {"2026-11-22-08:00"}, catchup_hours=3, delay_minutes=5)
    assert keys == ["2026-11-22-07:00", "2026-11-22-09:00"]
    assert missing_closed_hours(datetime(2026, 11, 22, 10, 3, tzinfo=timezone.utc), set(), 1, 5) == ["2026-11-22-08:00"]
    with dg.instance_for_test() as instance:
        (request,) = cloudwatch_catchup_sensor(dg.build_sensor_context(instance=instance))
        # six consecutive missing hours: one range run, not six
        assert request.run_key.endswith(":catchup") and request.partition_key_range is not None
        assert len(hourly_partitions.get_partition_keys_in_range(request.partition_key_range)) == 6


def test_missing_hours_are_grouped_into_consecutive_ranges():
    from metrics_pipeline.defs.automation import contiguous_ranges, range_request

    keys = ["2026-11-22-09:00", "2026-11-22-07:00", "2026-11-22-06:00", "2026-11-21-23:00", "2026-11-22-00:00"]
    assert contiguous_ranges(keys) == [("2026-11-21-23:00", "2026-11-22-00:00"), ("2026-11-22-06:00", "2026-11-22-07:00"),
                                       ("2026-11-22-09:00", "2026-11-22-09:00")]
    assert range_request("2026-11-22-09:00", "2026-11-22-09:00", "catchup").partition_key == "2026-11-22-09:00"


def _sources_and_derived(optional):
    @dg.asset(partitions_def=hourly_partitions)
    def host_points(): ...

    @dg.asset(partitions_def=hourly_partitions)
    def cloudwatch_points(): ...

    @dg.asset(partitions_def=hourly_partitions)
    def whatap_points(): ...

    @dg.asset(partitions_def=hourly_partitions, deps=[host_points, cloudwatch_points, whatap_points],
              automation_condition=derived_condition(optional=dg.AssetSelection.assets(*optional)))
    def rollups(): ...

    return dg.Definitions(assets=[host_points, cloudwatch_points, whatap_points, rollups])


def _materialize(instance, key, partition):
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))


def _requested(result) -> set[str]:
    return {
        pk for r in result.results if r.key == dg.AssetKey("rollups")
        for pk in r.true_subset.expensively_compute_partition_keys()
    }


def test_rollups_wait_for_configured_api_sources_but_not_for_optional_ones():
    # cloudwatch is "not configured" and host arrives as files: only whatap holds an hour back.
    defs = _sources_and_derived(optional=["host_points", "cloudwatch_points"])
    instance = dg.DagsterInstance.ephemeral()
    now = datetime.now(timezone.utc).replace(minute=30, second=0, microsecond=0)
    hour = (now - timedelta(hours=1)).replace(minute=0).strftime("%Y-%m-%d-%H:%M")
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=now)
    assert _requested(first) == set()  # the first evaluation only initialises its state

    _materialize(instance, "host_points", hour)
    waiting = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor,
                                                evaluation_time=now + timedelta(minutes=1))
    assert hour not in _requested(waiting)  # whatap (configured) has not landed this hour yet

    _materialize(instance, "whatap_points", hour)
    ready = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=waiting.cursor,
                                              evaluation_time=now + timedelta(minutes=2))
    assert hour in _requested(ready)  # cloudwatch never materialised, and never will: not waited for
    _materialize(instance, "rollups", hour)
    done = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=ready.cursor,
                                             evaluation_time=now + timedelta(minutes=3))
    assert hour not in _requested(done)

    # Late host data re-materialises the source hour: the rollup of that hour follows.
    _materialize(instance, "host_points", hour)
    late = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=done.cursor,
                                             evaluation_time=now + timedelta(minutes=4))
    assert hour in _requested(late)


def test_the_hour_that_just_closed_is_recomputed_once_even_if_nothing_upstream_landed():
    @dg.asset(partitions_def=hourly_partitions)
    def host_points(): ...

    @dg.asset(partitions_def=hourly_partitions, deps=[host_points],
              automation_condition=derived_condition(optional=dg.AssetSelection.assets("host_points"),
                                                     recheck_closed_hour=True))
    def rollups(): ...

    defs = dg.Definitions(assets=[host_points, rollups])
    instance = dg.DagsterInstance.ephemeral()
    start = datetime.now(timezone.utc).replace(minute=50, second=0, microsecond=0) - timedelta(hours=3)
    closing = start.replace(minute=0).strftime("%Y-%m-%d-%H:%M")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=start)
    seen = []
    for minutes in (5, 12, 17, 40, 80):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor,
                                                   evaluation_time=start + timedelta(minutes=minutes))
        for key in _requested(result):
            seen.append((minutes, key))
            _materialize(instance, "rollups", key)
    # 10 min after the first evaluation a new hour appears (newly missing: computed at once);
    # at :05 of the next hour the hour that closed, silent all along, is recomputed once.
    assert (17, closing) in seen
    assert [m for m, k in seen if k == closing] == [17]
