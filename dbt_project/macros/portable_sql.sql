{# SQL that DuckDB (target `local`) and PostgreSQL (target `postgres`) spell differently, each behind
   adapter.dispatch as in moodle_time.sql. The duckdb__ forms are the SQL the models always ran on DuckDB; the
   default__ forms are PostgreSQL's (15 or later) and give the same values, down to the text a phone shows. #}

{# A text split at a delimiter, as an array for unnest(...) (with ordinality: the 1-based position). #}
{% macro split_text(text, delimiter) -%}
    {{ return(adapter.dispatch('split_text', 'moodle_commcare')(text, delimiter)) }}
{%- endmacro %}

{% macro duckdb__split_text(text, delimiter) -%}
    string_split({{ text }}, {{ delimiter }})
{%- endmacro %}

{% macro default__split_text(text, delimiter) -%}
    string_to_array({{ text }}, {{ delimiter }})
{%- endmacro %}

{# The first row of each partition in an order, of the select statement in the call block (which has no order by
   of its own):
       {% call first_row('cp.course_id', 'cp.depth desc') %} select ... from ... {% endcall %}
   DuckDB qualifies; PostgreSQL selects DISTINCT ON the partition. Ties pick any one row. #}
{% macro first_row(partition_by, order_by) -%}
    {{ return(adapter.dispatch('first_row', 'moodle_commcare')(partition_by, order_by, caller())) }}
{%- endmacro %}

{% macro duckdb__first_row(partition_by, order_by, sql) -%}
    {{ sql | trim }}
    qualify row_number() over (partition by {{ partition_by }} order by {{ order_by }}) = 1
{%- endmacro %}

{% macro default__first_row(partition_by, order_by, sql) -%}
    {%- set sql = sql | trim -%}
    {%- if sql[:6] | lower != 'select' or sql[6:7] not in (' ', '\n') -%}
        {{ exceptions.raise_compiler_error("first_row: the call block must hold one select statement") }}
    {%- endif -%}
    select distinct on ({{ partition_by }}) {{ sql[6:] | trim }}
    order by {{ partition_by }}, {{ order_by }}
{%- endmacro %}

{# A top-level key of a JSON object as text (NULL when absent). The extract stores JSON as text on DuckDB and as
   jsonb on PostgreSQL. `key` is a plain name, quoted here. #}
{% macro json_text(column, key) -%}
    {{ return(adapter.dispatch('json_text', 'moodle_commcare')(column, key | replace("'", "") | replace('"', ''))) }}
{%- endmacro %}

{% macro duckdb__json_text(column, key) -%}
    json_extract_string({{ column }}, '$."{{ key }}"')
{%- endmacro %}

{% macro default__json_text(column, key) -%}
    (cast({{ column }} as jsonb) ->> '{{ key }}')
{%- endmacro %}

{# The unsigned decimal number a text starts with ("60.00 %" -> 60.0) as a double; NULL when it starts otherwise. #}
{% macro leading_number(text) -%}
    {{ return(adapter.dispatch('leading_number', 'moodle_commcare')(text)) }}
{%- endmacro %}

{% macro duckdb__leading_number(text) -%}
    try_cast(regexp_extract({{ text }}, '^\s*([0-9]+(\.[0-9]+)?)', 1) as double)
{%- endmacro %}

{% macro default__leading_number(text) -%}  {# white space as DuckDB's \s: see plain_text #}
    cast(substring({{ text }} from '^[\t\n\f\r ]*([0-9]+(\.[0-9]+)?)') as double precision)
{%- endmacro %}

{# The double type, for casts. #}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'moodle_commcare')()) }}
{%- endmacro %}

{% macro duckdb__type_double() -%} double {%- endmacro %}

{% macro default__type_double() -%} double precision {%- endmacro %}

{# A double rounded to `digits` decimals (0 to 6), still a double. DuckDB's round(double, n) rounds the double's
   exact binary value, halves away from zero: round(0.015, 2) is 0.01 (0.015 is 0.01499999... in binary),
   round(0.125, 2) is 0.13. PostgreSQL has no round(double precision, int), and round(numeric, int) would round
   0.015 up (a double becomes a numeric of 15 digits). So on PostgreSQL: t = value * 10^n in double precision, its
   rounding error e exactly (Dekker's two-product: the value split in halves of 26 bits, each times 10^n exact),
   and t's fraction decides, e only on an exact .5: the same double as DuckDB's, for every value. #}
{% macro round_double(value, digits) -%}
    {{ return(adapter.dispatch('round_double', 'moodle_commcare')(value, digits | int)) }}
{%- endmacro %}

{% macro duckdb__round_double(value, digits) -%}
    round({{ value }}, {{ digits }})
{%- endmacro %}

{% macro default__round_double(value, digits) -%}
    {%- set m = 10 ** digits -%}
    {%- set v = '(cast(' ~ value ~ ' as double precision))' -%}
    {%- set t = '(' ~ v ~ ' * ' ~ m ~ ')' -%}
    {%- set c = '(cast(134217729 as double precision) * ' ~ v ~ ')' -%}
    {%- set hi = '(' ~ c ~ ' - (' ~ c ~ ' - ' ~ v ~ '))' -%}
    {%- set err = '((' ~ hi ~ ' * ' ~ m ~ ' - ' ~ t ~ ') + (' ~ v ~ ' - ' ~ hi ~ ') * ' ~ m ~ ')' -%}
    {%- set frac = '(abs(' ~ t ~ ') - floor(abs(' ~ t ~ ')))' -%}
    (sign({{ t }}) * (floor(abs({{ t }}))
        + case when {{ frac }} > 0.5 or ({{ frac }} = 0.5 and sign({{ t }}) * {{ err }} >= 0) then 1 else 0 end)
        / {{ m }})
{%- endmacro %}

{# An aggregate: `value` at the row with the smallest `key`, among the rows with neither NULL (and matching `where`
   when given). Ties pick any one: give a key that has none when the choice shows. #}
{% macro min_by(value, key, where=none) -%}
    {{ return(adapter.dispatch('min_by', 'moodle_commcare')(value, key, where)) }}
{%- endmacro %}

{% macro duckdb__min_by(value, key, where) -%}
    arg_min({{ value }}, {{ key }}){% if where %} filter (where {{ where }}){% endif %}
{%- endmacro %}

{% macro default__min_by(value, key, where) -%}
    (array_agg({{ value }} order by {{ key }}) filter (
        where {{ value }} is not null and {{ key }} is not null{% if where %} and ({{ where }}){% endif %}
    ))[1]
{%- endmacro %}

{# A timestamp's date as text, YYYY-MM-DD. #}
{% macro date_text(ts) -%}
    {{ return(adapter.dispatch('date_text', 'moodle_commcare')(ts)) }}
{%- endmacro %}

{% macro duckdb__date_text(ts) -%}
    strftime({{ ts }}, '%Y-%m-%d')
{%- endmacro %}

{% macro default__date_text(ts) -%}
    to_char({{ ts }}, 'YYYY-MM-DD')
{%- endmacro %}
