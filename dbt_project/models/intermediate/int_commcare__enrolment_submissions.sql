-- Missing (due, not submitted) and late (submitted after the due date) assignments per student and course.
select
    course_id,
    user_id,
    count(case when is_missing then 1 end) as missing_submissions,
    count(case when is_late then 1 end) as late_submissions,
    count(submitted_at) as submitted_assignments
from {{ ref('int_commcare__student_assignments') }}
group by course_id, user_id
