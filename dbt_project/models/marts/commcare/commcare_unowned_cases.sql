-- Cases that cannot be exported because no CommCare owner applies: add a row to seeds/commcare_owner_map.csv
-- for the course or its category, or set var commcare_default_owner_id.
select
    'student' as case_type,
    external_id,
    user_id as moodle_user_id,
    cast(null as bigint) as moodle_course_id,
    'no course of this student maps to a CommCare owner' as reason
from {{ ref('int_commcare__students') }}
where owner_id is null

union all

select
    'course_enrolment' as case_type,
    se.external_id,
    se.user_id as moodle_user_id,
    se.course_id as moodle_course_id,
    case
        when se.owner_id is null then 'course ' || se.course_shortname || ' maps to no CommCare owner'
        else 'its student case has no owner'
    end as reason
from {{ ref('int_commcare__student_enrolments') }} as se
inner join {{ ref('int_commcare__students') }} as st using (user_id)
where se.owner_id is null or st.owner_id is null
