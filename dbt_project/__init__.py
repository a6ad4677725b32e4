"""The dbt project that shapes the raw Moodle tables into CommCare case tables.

Not Python: a package only so that an installed moodle-commcare carries the project as package data
(`moodle_commcare.transform.PROJECT_DIR`); dbt itself reads the folder, and `dbt build` runs in it as in any
dbt project.
"""
