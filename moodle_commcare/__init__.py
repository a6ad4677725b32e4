"""moodle-commcare: keep CommCare case records in step with a Moodle site (dlt -> DuckDB -> dbt -> CommCare)."""

__version__ = "0.1.0"
