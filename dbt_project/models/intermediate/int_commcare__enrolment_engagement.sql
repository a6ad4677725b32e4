-- Engagement of a student in a course, for SMS nudges. Thresholds are dbt vars:
--   not_started: never entered the course;
--   active:      entered within engagement_active_days, with fewer than at_risk_missing_submissions missing;
--   at_risk:     last entered within engagement_inactive_days, or active but missing too many submissions;
--   inactive:    last entered longer ago than engagement_inactive_days;
--   unknown:     Moodle hid the last access from the token's user ("Hide user fields"), which is not "never".
with facts as (
    select
        e.course_id,
        e.user_id,
        e.is_course_access_known,
        e.last_course_access_at,
        {{ days_between('e.last_course_access_at', as_of()) }} as days_since_last_access,
        coalesce(s.missing_submissions, 0) as missing_submissions
    from {{ ref('int_moodle__enrolments') }} as e
    left join {{ ref('int_commcare__enrolment_submissions') }} as s using (course_id, user_id)
    where e.is_student
)

select
    course_id,
    user_id,
    days_since_last_access,
    case
        when not is_course_access_known then 'unknown'
        when last_course_access_at is null then 'not_started'
        when days_since_last_access > {{ var('engagement_inactive_days') }} then 'inactive'
        when days_since_last_access > {{ var('engagement_active_days') }} then 'at_risk'
        when missing_submissions >= {{ var('at_risk_missing_submissions') }} then 'at_risk'
        else 'active'
    end as engagement_status
from facts
