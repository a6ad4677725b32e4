{# Lines joined into one plain-text property a phone can show offline. `lines` is a relation (a CTE) with the
   columns `keys`, `line_order` and `line`; the lines kept are the first ones whose total stays within
   var commcare_offline_text_limit characters, and a last line says how many were left out. One row per key. #}
{% macro phone_text(lines, keys, more='more') -%}
    select
        {{ keys | join(', ') }},
        string_agg(case when _fits then line end, chr(10) order by line_order)
            || case when count(*) filter (where not _fits) > 0
                    then chr(10) || '... ' || count(*) filter (where not _fits) || ' {{ more }}' else '' end as text,
        count(*) as line_count
    from (
        select
            *,
            sum(length(line) + 1) over (
                partition by {{ keys | join(', ') }} order by line_order rows between unbounded preceding and current row
            ) <= {{ var('commcare_offline_text_limit') | int }} - 40 as _fits
        from {{ lines }}
    ) as numbered
    group by {{ keys | join(', ') }}
{%- endmacro %}

{# A date as a phone shows it and CommCare's date properties take it (YYYY-MM-DD, UTC). #}
{% macro phone_date(ts) -%}
    {{ date_text(ts) }}
{%- endmacro %}

{# What kind of activity a module is, in a word a student knows. #}
{% macro activity_kind(module_type) -%}
    case {{ module_type }}
        when 'assign' then 'assignment' when 'url' then 'link' when 'resource' then 'file'
        when 'h5pactivity' then 'H5P' when 'scorm' then 'SCORM package' when 'data' then 'database'
        when 'lti' then 'external tool' when 'bigbluebuttonbn' then 'online meeting'
        else {{ module_type }}
    end
{%- endmacro %}

{# One grade as "85/100", "12.5/20", "-/100" before grading, or Moodle's own text where there is no range (scales). #}
{% macro grade_text(alias) -%}
    case
        when {{ alias }}.grade_raw is not null and {{ alias }}.grade_max is not null
            then {{ grade_number(alias ~ '.grade_raw') }} || '/' || {{ grade_number(alias ~ '.grade_max') }}
        when {{ alias }}.grade_max is not null then '-/' || {{ grade_number(alias ~ '.grade_max') }}
        else coalesce({{ alias }}.grade_formatted, '-')
    end
{%- endmacro %}

{# A grade's number as text, to two decimals without trailing zeros: 85, 12.5, 7.25. The same text on every
   warehouse: the rounded double goes through a decimal, whose text DuckDB and PostgreSQL write alike. #}
{% macro grade_number(value) -%}
    rtrim(rtrim(cast(cast({{ round_double(value, 2) }} as decimal(38, 2)) as varchar), '0'), '.')
{%- endmacro %}
