-- The activities a student's phone may show, in the course page's order: visible, shown on the course page, not
-- restricted by a condition, in a visible unrestricted section. A condition may open an activity to some students
-- and not others, and the connector's own account cannot tell which, so a restricted one stays off every phone.
-- Labels are text on the course page, not activities. The due date is the activity's own (the student's own
-- assignment dates, overrides and extensions, are in int_commcare__student_assignments).
select
    m.course_id,
    m.course_module_id,
    s.section_number,
    s.section_name,
    m.position_in_section,
    m.module_type,
    m.module_name,
    m.completion_tracking,
    coalesce(a.due_at, m.due_at) as due_at,
    row_number() over (partition by m.course_id order by s.section_number, m.position_in_section) as outline_position
from {{ ref('stg_moodle__course_modules') }} as m
inner join {{ ref('stg_moodle__course_sections') }} as s using (section_id, course_id)
left join {{ ref('stg_moodle__assignments') }} as a using (course_module_id)
where m.is_offline_visible and s.is_offline_visible and m.module_type <> 'label'
