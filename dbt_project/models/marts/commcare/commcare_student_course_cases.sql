-- A student's own course cases (case type `student_course`): one per course of a student mapped to a CommCare
-- mobile worker, owned by that worker, child of the course case. The student's phone gets these and, as their
-- parents, the course cases with the outline; nothing of any other student (README: "Students' own phones").
-- A case whose course has no owner is left out (its parent cannot exist) and reported in commcare_unowned_cases.
-- owner_id is empty only on a close: the student lost their worker, and the close leaves the owner as it is.
select
    'student_course' as case_type,
    external_id,
    left(course_fullname, 255) as name,
    owner_id,
    parent_external_id,
    'course' as parent_type,
    user_id as moodle_user_id,
    course_id as moodle_course_id,
    course_shortname,
    course_start_date,
    course_end_date,
    enrolment_status,
    cast(last_course_access as date) as last_course_access,
    final_grade_formatted as final_grade,
    final_grade_percent,
    final_grade_letter,
    grades,
    completion,
    activities_done,
    activities_tracked,
    course_progress_percent,
    course_completed,
    overdue,
    overdue_count,
    to_do,
    to_do_count,
    next_due_item,
    next_due_date,
    submitted_late,
    late_count,
    engagement_status,
    case when should_close then 'yes' end as close
from {{ ref('int_commcare__student_courses') }}
where course_owner_id is not null
