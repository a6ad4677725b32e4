-- The Moodle site this warehouse holds, and the key that makes external ids unique across sites.
-- The key is the one pinned at the first transform (ops.site_identity, moodle_commcare/site_identity.py), so a
-- `dbt build` run by hand after the site moved keeps every case's id; a slug of the address only before that.
{% set pinned = adapter.get_relation(database=target.database, schema='ops', identifier='site_identity') if execute else none %}
{% if var('moodle_site_key') %}
    {% set site_key = "'" ~ var('moodle_site_key') ~ "'" %}
{% else %}
    {% set site_key %}
        coalesce(
            {% if pinned %}(select max(site_key) from {{ pinned }}),{% endif %}
            trim(regexp_replace(lower(regexp_replace(site_url, '^[a-z]+://(www\.)?', '')), '[^a-z0-9]+', '-', 'g'), '-')
        )
    {% endset %}
{% endif %}
select
    site_url,
    site_name,
    {{ site_key }} as site_key
from {{ ref('stg_moodle__site_info') }}
order by extracted_at desc  -- the latest run's row (plain SQL: DuckDB and PostgreSQL alike)
limit 1
