"""v_anomalies filters rows by tenant exactly like the other BI views: a login restricted to a tenant sees
that tenant's scores and nothing else, even through a function in its own WHERE clause, and cannot read
the scores, states or hours tables behind the view."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from psycopg import errors

from metrics_pipeline.lib.anomalies import scores
from metrics_pipeline.lib.anomalies.config import AnomaliesConfig
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.anomalies import ORIGIN, add_series, daily, put_buckets

H = timedelta(hours=1)


@pytest.fixture
def two_tenants(warehouse_dsn, db):
    own = add_series(db, "aws_ec2_cpuutilization", "i-own", labels={"tenant": "acme"})
    other = add_series(db, "aws_ec2_cpuutilization", "i-other", labels={"tenant": "boreal"})
    untenanted = add_series(db, "host_cpu_percent", "build-1", source="host")
    for i, sid in enumerate((own, other, untenanted)):
        values = daily(72 * 12, seed=i)
        values[-18:-12] += 40  # something to flag in each, on the third day
        put_buckets(db, sid, ORIGIN, values)
    scores.score_window(Warehouse(warehouse_dsn), ORIGIN + 66 * H, ORIGIN + 72 * H, AnomaliesConfig(),
                        now=ORIGIN + 80 * H)
    return own, other


def test_a_restricted_login_sees_only_its_tenants_anomalies(bi_login, two_tenants):
    own, other = two_tenants
    with bi_login() as everyone:
        seen = dict(everyone.execute("SELECT coalesce(tenant, '-'), count(*) FROM metrics.v_anomalies GROUP BY 1"))
    assert seen == {"acme": 72, "boreal": 72, "-": 72}
    with bi_login(tenants=["acme"]) as acme:
        rows = acme.execute("SELECT DISTINCT series_id, tenant FROM metrics.v_anomalies").fetchall()
        assert rows == [(own, "acme")]
        # conditions on the other tenant's series find nothing; a leaky function sees nothing of it
        assert acme.execute("SELECT count(*) FROM metrics.v_anomalies WHERE series_id = %s", (other,)).fetchone() == (0,)
        seen_by_function: list[str] = []
        acme.add_notice_handler(lambda diag: seen_by_function.append(diag.message_primary or ""))
        acme.execute("SET default_transaction_read_only = off")
        acme.execute("CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS "
                     "$$ BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END $$")
        acme.execute("SELECT count(*) FROM metrics.v_anomalies WHERE pg_temp.leak(resource)").fetchone()
        assert seen_by_function and not any("i-other" in m or "build-1" in m for m in seen_by_function)
        for table in ("anomaly_scores", "anomaly_state", "anomaly_hours", "bi_all_anomalies"):
            with pytest.raises(errors.InsufficientPrivilege):
                acme.execute(f"SELECT 1 FROM metrics.{table} LIMIT 1")


def test_every_tenant_has_flagged_buckets_to_hide(bi_login, two_tenants):
    """Not vacuous: the rows filtered out are flagged anomalies with their band, not empty scores."""
    with bi_login() as everyone:
        flagged = dict(everyone.execute(
            "SELECT tenant, count(*) FROM metrics.v_anomalies WHERE flagged AND tenant IS NOT NULL GROUP BY 1"))
    assert set(flagged) == {"acme", "boreal"} and np.min(list(flagged.values())) >= 1
