{# A key of one or more columns is unique (dbt_utils.unique_combination_of_columns without a package download). #}
{% test unique_key(model, columns) %}
select {{ columns | join(', ') }}, count(*) as n
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
