-- Moodle never reports an unenrolment: a pair missing from its course's latest full read is no longer enrolled.
select
    e.course_id,
    e.user_id,
    e.role_shortnames,
    e.is_student,
    e.is_active,
    e.seen_at >= s.snapshot_at as is_enrolled,
    case
        when e.seen_at < s.snapshot_at then 'unenrolled'
        when not e.is_active then 'suspended'
        else 'active'
    end as enrolment_status,
    e.is_course_access_known,
    e.last_course_access_at
from {{ ref('stg_moodle__enrolments') }} as e
inner join {{ ref('stg_moodle__enrolment_snapshots') }} as s using (course_id)
