-- Missing (due, not submitted) and late (submitted after the due date) assignments per student and course.
with due as (
    select e.course_id, e.user_id, a.assignment_id, a.due_at
    from {{ ref('int_moodle__enrolments') }} as e
    join {{ ref('stg_moodle__assignments') }} as a using (course_id)
    where e.is_student and not a.is_offline
),

submitted as (
    select assignment_id, user_id, max(modified_at) as submitted_at
    from {{ ref('stg_moodle__assignment_submissions') }}
    where submission_status = 'submitted'
    group by assignment_id, user_id
)

select
    due.course_id,
    due.user_id,
    count(case when due.due_at < {{ as_of() }} and s.submitted_at is null then 1 end) as missing_submissions,
    count(case when s.submitted_at > due.due_at then 1 end) as late_submissions,
    count(s.submitted_at) as submitted_assignments
from due
left join submitted as s using (assignment_id, user_id)
group by due.course_id, due.user_id
