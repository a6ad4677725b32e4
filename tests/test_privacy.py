"""Nothing about a school's run leaves the machine unless the user asks: dlt's and dbt's telemetry are off."""

from __future__ import annotations

from moodle_commcare.transform import run_transform

from .conftest import Warehouse
from .oracle import VARS


def test_dlt_and_dbt_telemetry_are_off(warehouse: Warehouse) -> None:
    from dlt.common.runtime import anon_tracker

    warehouse.extract()
    assert anon_tracker._ANON_TRACKER_ENDPOINT is None, "dlt would report anonymous usage to dlthub"
    run_transform(warehouse.path, VARS)
    from dbt import tracking
    from dbt.flags import get_flags

    assert get_flags().SEND_ANONYMOUS_USAGE_STATS is False
    assert tracking.active_user is None or tracking.active_user.do_not_track, "dbt would report usage events"
