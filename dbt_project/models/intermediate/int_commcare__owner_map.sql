-- The owner map: rows of seeds/commcare_owner_map.csv plus those given in var commcare_owner_map.
select
    scope,
    moodle_id,
    owner_id
from {{ ref('commcare_owner_map') }}
{% for row in var('commcare_owner_map') %}
union all
select '{{ row["scope"] }}', cast({{ row["moodle_id"] | int }} as bigint), '{{ row["owner_id"] | replace("'", "''") }}'
{% endfor %}
