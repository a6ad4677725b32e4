-- The CommCare owner of each course's cases: a course mapping, else the nearest mapped category on the
-- course's category path, else the configured default; NULL when none applies (reported, never exported).
{% set default_owner = "'" ~ var('commcare_default_owner_id') ~ "'" if var('commcare_default_owner_id') else 'null' %}

with category_path as (
    select
        c.course_id,
        cast(p.ancestor_id as bigint) as ancestor_id,
        p.depth
    from {{ ref('stg_moodle__courses') }} as c
    inner join {{ ref('stg_moodle__course_categories') }} as cat using (category_id)
    cross join unnest({{ split_text("trim(cat.category_path, '/')", "'/'") }}) with ordinality as p (ancestor_id, depth)
),

by_category as (  -- the nearest mapped category: the deepest on the path
    {% call first_row('cp.course_id', 'cp.depth desc') %}
    select
        cp.course_id,
        m.owner_id
    from category_path as cp
    inner join {{ ref('int_commcare__owner_map') }} as m on m.scope = 'category' and cp.ancestor_id = m.moodle_id
    {% endcall %}
)

select
    c.course_id,
    coalesce(by_course.owner_id, by_category.owner_id, {{ default_owner }}) as owner_id,
    case
        when by_course.owner_id is not null then 'course'
        when by_category.owner_id is not null then 'category'
        when {{ default_owner }} is not null then 'default'
    end as owner_source
from {{ ref('stg_moodle__courses') }} as c
left join {{ ref('int_commcare__owner_map') }} as by_course on by_course.scope = 'course' and c.course_id = by_course.moodle_id
left join by_category using (course_id)
