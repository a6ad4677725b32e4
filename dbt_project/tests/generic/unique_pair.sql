{# A two-column key is unique: dbt_utils.unique_combination_of_columns without a package download. #}
{% test unique_pair(model, a, b) %}
select {{ a }}, {{ b }}, count(*) as n
from {{ model }}
group by {{ a }}, {{ b }}
having count(*) > 1
{% endtest %}
