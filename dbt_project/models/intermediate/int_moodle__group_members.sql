-- Group memberships as Moodle listed them with each enrolment (core_enrol_get_enrolled_users `groups`).
select
    e.course_id,
    cast(g.group_id as bigint) as group_id,
    e.user_id
from {{ ref('stg_moodle__enrolments') }} as e
cross join unnest({{ split_text('e.group_ids', "','") }}) as g (group_id)
where e.group_ids is not null
