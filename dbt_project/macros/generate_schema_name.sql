{# Target-aware schemas. The connector's own target (`local`, what `moodle-commcare transform` runs) builds the
   schemas as configured (moodle_staging, commcare): the names the export and analysts read. Any other target
   prefixes them with its schema (`dbt build --target dev` builds dev_commcare...), so an analyst's trial build never
   replaces the marts the next export sends from. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- elif target.name == 'local' -%}
        {{ custom_schema_name | trim }}
    {%- else -%}
        {{ target.schema }}_{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
