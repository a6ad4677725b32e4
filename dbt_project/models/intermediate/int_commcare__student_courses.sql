{{ config(materialized='table') }}  -- read by both new marts and the unowned report
-- One row per student-course case (int_commcare__student_course_scope) with what the student's own phone shows.
-- Owner (the student's mobile worker) is NULL for a case to close because the student has no worker now: the
-- close leaves its owner as it is in CommCare.
select
    se.site_key,
    sc.course_id,
    sc.user_id,
    sc.external_id,
    sc.owner_id,
    se.owner_id as course_owner_id,
    'moodle-' || se.site_key || '-c-' || sc.course_id as parent_external_id,
    se.course_shortname,
    se.course_fullname,
    se.course_start_date,
    se.course_end_date,
    se.enrolment_status,
    se.last_course_access,
    se.final_grade_formatted,
    se.final_grade_percent,
    se.final_grade_letter,
    se.course_progress_percent,
    se.course_completed,
    se.engagement_status,
    ci.grades,
    ci.completion,
    ci.activities_done,
    ci.activities_tracked,
    ci.overdue,
    ci.overdue_count,
    ci.to_do,
    ci.to_do_count,
    ci.submitted_late,
    ci.late_count,
    ci.next_due_item,
    ci.next_due_date,
    se.should_close or sc.owner_id is null as should_close
from {{ ref('int_commcare__student_course_scope') }} as sc
inner join {{ ref('int_commcare__student_enrolments') }} as se using (course_id, user_id)
left join {{ ref('int_commcare__student_course_items') }} as ci using (course_id, user_id)
