-- The Moodle site this warehouse holds, and the key that makes external ids unique across sites.
select
    site_url,
    site_name,
    {% if var('moodle_site_key') %}
    '{{ var("moodle_site_key") }}' as site_key
    {% else %}
    trim(regexp_replace(lower(regexp_replace(site_url, '^[a-z]+://(www\.)?', '')), '[^a-z0-9]+', '-', 'g'), '-') as site_key
    {% endif %}
from {{ ref('stg_moodle__site_info') }}
qualify row_number() over (order by extracted_at desc) = 1
