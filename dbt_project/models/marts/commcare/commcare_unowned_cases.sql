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

union all

select
    'course' as case_type,
    'moodle-' || site_key || '-c-' || course_id as external_id,
    cast(null as bigint) as moodle_user_id,
    course_id as moodle_course_id,
    'course ' || course_shortname || ' maps to no CommCare owner' as reason
from {{ ref('int_commcare__student_courses') }}
where course_owner_id is null
group by site_key, course_id, course_shortname

union all

select
    'student_course' as case_type,
    sc.external_id,
    sc.user_id as moodle_user_id,
    sc.course_id as moodle_course_id,
    'course ' || sc.course_shortname || ' maps to no CommCare owner' as reason
from {{ ref('int_commcare__student_courses') }} as sc
where sc.course_owner_id is null and not sc.should_close
