{# Moodle stores times as Unix seconds and uses 0 for "never": that becomes NULL, not 1970. #}
{% macro moodle_ts(column) -%}
    case when {{ column }} is null or {{ column }} <= 0 then null
         else make_timestamp(cast({{ column }} as bigint) * 1000000) end
{%- endmacro %}

{# The reference "now" (UTC, timestamp without zone): var as_of when set, else the run's time. #}
{% macro as_of() -%}
    {%- if var('as_of') -%} cast('{{ var("as_of") }}' as timestamp)
    {%- else -%} cast(timezone('UTC', current_timestamp) as timestamp)
    {%- endif -%}
{%- endmacro %}

{% macro days_between(earlier, later) -%}
    case when {{ earlier }} is null then null else date_diff('day', {{ earlier }}, {{ later }}) end
{%- endmacro %}
