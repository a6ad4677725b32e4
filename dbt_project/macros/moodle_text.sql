{# Stored Moodle text (names arrive raw: multi-language blocks, entities) as plain text in one language, through
   the moodle_text() function that moodle_commcare/dbt_udfs.py registers. The language is var moodle_language, else
   the language Moodle reports for the token's user (core_webservice_get_site_info.lang: normally the site's). #}
{% macro moodle_language() -%}
    {%- if var('moodle_language') -%} '{{ var("moodle_language") }}'
    {%- else -%} (select lang from {{ source('moodle_raw', 'site_info') }} order by extracted_at desc limit 1)
    {%- endif -%}
{%- endmacro %}

{# Only text with markup or an entity goes through Python: most names and grades have neither. #}
{% macro plain_text(column) -%}
    case when regexp_matches({{ column }}, '[<&]') then moodle_text({{ column }}, {{ moodle_language() }})
         else trim(regexp_replace({{ column }}, '\s+', ' ', 'g')) end
{%- endmacro %}
