"""Reverse-ETL steps: exports/commcare sends the case marts to CommCare."""
