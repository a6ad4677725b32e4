-- Every student's assignments with their own due date and when they (or their team) submitted: the enrolment case
-- counts missing and late ones, the student's own case lists them. The due date is the student's own: their user
-- or group override when the extract reads them, pushed later by an extension. In a team assignment the group's
-- submission counts for every member. Assignments without online submissions (offline) are left out.
with due as (
    select
        e.course_id,
        e.user_id,
        a.assignment_id,
        a.course_module_id,
        a.assignment_name,
        greatest(coalesce(dd.due_at, a.due_at), f.extension_due_at) as due_at
    from {{ ref('int_moodle__enrolments') }} as e
    inner join {{ ref('stg_moodle__assignments') }} as a using (course_id)
    left join {{ ref('stg_moodle__assignment_due_dates') }} as dd using (assignment_id, user_id)
    left join {{ ref('stg_moodle__assignment_user_flags') }} as f using (assignment_id, user_id)
    where e.is_student and not a.is_offline
),

own as (
    select
        assignment_id,
        user_id,
        modified_at as submitted_at
    from {{ ref('stg_moodle__assignment_submissions') }}
    where submission_status = 'submitted' and user_id <> 0
),

team as (
    select
        s.assignment_id,
        m.user_id,
        s.modified_at as submitted_at
    from {{ ref('stg_moodle__assignment_submissions') }} as s
    inner join {{ ref('stg_moodle__assignments') }} as a using (assignment_id)
    inner join {{ ref('int_moodle__group_members') }} as m on a.course_id = m.course_id and s.group_id = m.group_id
    where s.submission_status = 'submitted' and s.user_id = 0
),

submitted as (
    select
        assignment_id,
        user_id,
        max(submitted_at) as submitted_at
    from (
        select * from own
        union all
        select * from team
    ) as either_way
    group by assignment_id, user_id
)

select
    due.course_id,
    due.user_id,
    due.assignment_id,
    due.course_module_id,
    due.assignment_name,
    due.due_at,
    s.submitted_at,
    due.due_at < {{ as_of() }} and s.submitted_at is null as is_missing,
    coalesce(s.submitted_at > due.due_at, false) as is_late
from due
left join submitted as s using (assignment_id, user_id)
