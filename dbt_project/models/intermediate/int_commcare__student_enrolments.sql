{{ config(materialized='table') }}  -- read by both marts and the unowned report: built once, not re-run inside each
-- One row per student enrolment with everything the enrolment case shows; owner may still be NULL here.
select
    site.site_key,
    e.course_id,
    e.user_id,
    'moodle-' || site.site_key || '-e-' || e.course_id || '-' || e.user_id as external_id,
    'moodle-' || site.site_key || '-u-' || e.user_id as parent_external_id,
    o.owner_id,
    c.course_shortname,
    c.course_fullname,
    cast(c.course_start_at as date) as course_start_date,
    cast(c.course_end_at as date) as course_end_date,
    e.role_shortnames as role,
    e.enrolment_status,
    u.is_suspended as user_suspended,
    coalesce(eng.last_course_access_at, e.last_course_access_at) as last_course_access,
    ee.days_since_last_access,
    g.final_grade_raw,
    g.final_grade_formatted,
    g.final_grade_percent,
    g.final_grade_letter,
    coalesce(g.graded_items, 0) as graded_items,
    a.activities_done,
    a.activities_total,
    a.activities_percent,
    eng.progress_percent as course_progress_percent,
    coalesce(eng.is_course_completed, false) as course_completed,
    coalesce(s.missing_submissions, 0) as missing_submissions,
    coalesce(s.late_submissions, 0) as late_submissions,
    ee.engagement_status,
    g.grade_summary,
    left(c.course_shortname || ' — ' || u.full_name, 255) as case_name,
    e.enrolment_status <> 'active' or u.is_suspended as should_close
from {{ ref('int_moodle__enrolments') }} as e
cross join {{ ref('int_moodle__site') }} as site
inner join {{ ref('stg_moodle__courses') }} as c using (course_id)
inner join {{ ref('stg_moodle__users') }} as u using (user_id)
left join {{ ref('int_commcare__course_owners') }} as o using (course_id)
left join {{ ref('int_commcare__enrolment_engagement') }} as ee using (course_id, user_id)
left join {{ ref('int_commcare__enrolment_grades') }} as g using (course_id, user_id)
left join {{ ref('int_commcare__enrolment_activities') }} as a using (course_id, user_id)
left join {{ ref('int_commcare__enrolment_submissions') }} as s using (course_id, user_id)
left join {{ ref('stg_moodle__course_engagement') }} as eng using (course_id, user_id)
where e.is_student
