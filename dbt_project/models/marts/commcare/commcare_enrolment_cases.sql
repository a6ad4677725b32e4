-- Enrolment cases (case type `course_enrolment`), children of the student cases. A case is left out (and
-- reported in commcare_unowned_cases) when it or its parent student has no owner.
select
    'course_enrolment' as case_type,
    se.external_id,
    se.case_name as name,
    se.owner_id,
    se.parent_external_id,
    'student' as parent_type,
    se.user_id as moodle_user_id,
    se.course_id as moodle_course_id,
    se.course_shortname,
    se.course_fullname,
    se.course_start_date,
    se.course_end_date,
    se.role,
    se.enrolment_status,
    cast(se.last_course_access as date) as last_course_access,  -- a date: phones count the days themselves
    se.final_grade_raw,
    se.final_grade_formatted,
    se.final_grade_percent,
    se.final_grade_letter,
    se.graded_items,
    se.activities_done,
    se.activities_total,
    se.activities_percent,
    se.course_progress_percent,
    se.course_completed,
    se.missing_submissions,
    se.late_submissions,
    se.engagement_status,
    se.grade_summary,
    case when se.should_close then 'yes' end as close
from {{ ref('int_commcare__student_enrolments') }} as se
inner join {{ ref('int_commcare__students') }} as st using (user_id)
where se.owner_id is not null and st.owner_id is not null
