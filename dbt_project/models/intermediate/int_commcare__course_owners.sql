-- The CommCare owner of each course's cases: a course mapping, else the nearest mapped category on the
-- course's category path, else the configured default; NULL when none applies (reported, never exported).
with category_path as (
    select
        c.course_id,
        cast(p.ancestor_id as bigint) as ancestor_id,
        p.depth
    from {{ ref('stg_moodle__courses') }} as c
    join {{ ref('stg_moodle__course_categories') }} as cat using (category_id)
    cross join unnest(string_split(trim(cat.category_path, '/'), '/')) with ordinality as p(ancestor_id, depth)
),

by_category as (
    select cp.course_id, m.owner_id
    from category_path as cp
    join {{ ref('int_commcare__owner_map') }} as m on m.scope = 'category' and m.moodle_id = cp.ancestor_id
    qualify row_number() over (partition by cp.course_id order by cp.depth desc) = 1
)

select
    c.course_id,
    coalesce(by_course.owner_id, by_category.owner_id, {{ "'" ~ var('commcare_default_owner_id') ~ "'" if var('commcare_default_owner_id') else 'null' }}) as owner_id,
    case
        when by_course.owner_id is not null then 'course'
        when by_category.owner_id is not null then 'category'
        {% if var('commcare_default_owner_id') %}else 'default'{% endif %}
    end as owner_source
from {{ ref('stg_moodle__courses') }} as c
left join {{ ref('int_commcare__owner_map') }} as by_course on by_course.scope = 'course' and by_course.moodle_id = c.course_id
left join by_category using (course_id)
