{# Time helpers go through adapter.dispatch: DuckDB's own functions here, dbt's cross-database macros for
   PostgreSQL (target `postgres`) and any other warehouse. Times are UTC timestamps without time zone on both. #}

{# Moodle stores times as Unix seconds and uses 0 for "never": that becomes NULL, not 1970. #}
{% macro moodle_ts(column) -%}
    {{ return(adapter.dispatch('moodle_ts', 'moodle_commcare')(column)) }}
{%- endmacro %}

{% macro duckdb__moodle_ts(column) -%}
    case when {{ column }} is null or {{ column }} <= 0 then null
         else make_timestamp(cast({{ column }} as bigint) * 1000000) end
{%- endmacro %}

{% macro default__moodle_ts(column) -%}
    case when {{ column }} is null or {{ column }} <= 0 then null
         else {{ dbt.dateadd('second', column, "cast('1970-01-01 00:00:00' as timestamp)") }} end
{%- endmacro %}

{# The reference "now" (UTC, timestamp without zone): var as_of when set, else the run's time. #}
{% macro as_of() -%}
    {%- if var('as_of') -%} cast('{{ var("as_of") }}' as timestamp)
    {%- else -%} {{ return(adapter.dispatch('utc_now', 'moodle_commcare')()) }}
    {%- endif -%}
{%- endmacro %}

{% macro duckdb__utc_now() -%}
    cast(timezone('UTC', current_timestamp) as timestamp)
{%- endmacro %}

{% macro postgres__utc_now() -%}  {# UTC whatever the session's time zone (the connector sets PGTZ=UTC too) #}
    (current_timestamp at time zone 'UTC')
{%- endmacro %}

{% macro default__utc_now() -%}  {# UTC when the session's time zone is: set it so on such a target #}
    cast({{ dbt.current_timestamp() }} as timestamp)
{%- endmacro %}

{% macro days_between(earlier, later) -%}
    {{ return(adapter.dispatch('days_between', 'moodle_commcare')(earlier, later)) }}
{%- endmacro %}

{% macro duckdb__days_between(earlier, later) -%}
    case when {{ earlier }} is null then null else date_diff('day', {{ earlier }}, {{ later }}) end
{%- endmacro %}

{% macro default__days_between(earlier, later) -%}
    case when {{ earlier }} is null then null else {{ dbt.datediff(earlier, later, 'day') }} end
{%- endmacro %}
