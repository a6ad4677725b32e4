{{ config(materialized='table') }}  -- read by the student mart, the enrolment mart and the unowned report: built once
-- One row per Moodle user with at least one student enrolment (current or past); owner may still be NULL.
-- A student's owner is the owner of their first current course (by course id), else of their first course.
with per_student as (
    select
        user_id,
        count(case when enrolment_status = 'active' then 1 end) as active_course_count,
        coalesce(
            {{ min_by('owner_id', 'course_id', where="enrolment_status = 'active' and owner_id is not null") }},
            {{ min_by('owner_id', 'course_id', where='owner_id is not null') }}
        ) as owner_id,
        count(case when enrolment_status = 'active' and engagement_status in ('at_risk', 'inactive') then 1 end)
            as courses_behind,
        count(case when enrolment_status = 'active' and engagement_status = 'inactive' then 1 end) as courses_inactive,
        count(case when enrolment_status = 'active' and engagement_status = 'not_started' then 1 end) as courses_not_started,
        count(case when enrolment_status = 'active' and engagement_status <> 'unknown' then 1 end) as courses_known
    from {{ ref('int_commcare__student_enrolments') }}
    group by user_id
)

select
    site.site_key,
    u.user_id,
    'moodle-' || site.site_key || '-u-' || u.user_id as external_id,
    left(u.full_name, 255) as case_name,
    p.owner_id,
    u.first_name,
    u.last_name,
    u.email,
    u.username,
    u.user_idnumber,
    u.city,
    u.country_code,
    u.institution,
    u.department,
    ph.phone1 as phone_raw,
    ph.phone1_e164 as phone_e164,
    ph.phone2 as phone2_raw,
    ph.phone2_e164,
    coalesce(ph.phone1_e164, ph.phone2_e164) as sms_phone,
    ph.sms_phone_status,
    u.last_site_access_at as last_site_access,
    p.active_course_count,
    case
        when p.active_course_count = 0 then 'inactive'
        when p.courses_known = 0 then 'unknown'  -- Moodle hid every last access of this student
        when p.courses_inactive = p.courses_known then 'inactive'
        when p.courses_behind > 0 then 'at_risk'
        when p.courses_not_started = p.courses_known then 'not_started'
        else 'active'
    end as engagement_status,
    u.is_suspended as user_suspended,
    p.active_course_count = 0 or u.is_suspended as should_close
from per_student as p
cross join {{ ref('int_moodle__site') }} as site
inner join {{ ref('stg_moodle__users') }} as u using (user_id)
left join {{ ref('int_commcare__user_phones') }} as ph using (user_id)
