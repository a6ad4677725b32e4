{# A stored Moodle name as a phone shows it. The extract reads each name in one language, without markup or
   entities, into `<column>_plain` (pipelines/moodle/readable.py); a row loaded before that column existed falls
   back to the stored text with its spaces collapsed. The white space is spelled out: DuckDB's \s is these five,
   PostgreSQL's would take more (a vertical tab, Unicode spaces under a UTF-8 locale). #}
{% macro plain_text(column) -%}
    coalesce({{ column }}_plain, trim(regexp_replace({{ column }}, '[\t\n\f\r ]+', ' ', 'g')))
{%- endmacro %}
