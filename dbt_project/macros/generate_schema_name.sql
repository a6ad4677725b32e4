{# Target-aware schemas. The connector's own targets (`local` on DuckDB, `postgres` on PostgreSQL: what
   `moodle-commcare transform` runs) build the schemas as configured (moodle_staging, commcare): the names the
   export and analysts read. Any other target prefixes them with its schema (`dbt build --target dev` or
   `postgres_dev` builds dev_commcare...), so an analyst's trial build never replaces the marts the next export
   sends from. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- elif target.name in ('local', 'postgres') -%}
        {{ custom_schema_name | trim }}
    {%- else -%}
        {{ target.schema }}_{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
