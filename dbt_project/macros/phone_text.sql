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
    strftime({{ ts }}, '%Y-%m-%d')
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

{# One grade as "85/100", "-/100" before grading, or Moodle's own text where there is no range (scales). #}
{% macro grade_text(alias) -%}
    case
        when {{ alias }}.grade_raw is not null and {{ alias }}.grade_max is not null
            then format('{:g}', round({{ alias }}.grade_raw, 2)) || '/' || format('{:g}', round({{ alias }}.grade_max, 2))
        when {{ alias }}.grade_max is not null then '-/' || format('{:g}', round({{ alias }}.grade_max, 2))
        else coalesce({{ alias }}.grade_formatted, '-')
    end
{%- endmacro %}
