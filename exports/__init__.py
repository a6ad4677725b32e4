"""Reverse-ETL to CommCare: comes with a later issue."""
