select
    course_id,
    user_id,
    roles as role_shortnames,
    is_student,
    is_active,
    lastcourseaccess is not null as is_course_access_known,  -- NULL: Moodle hid it ("Hide user fields")
    {{ moodle_ts('lastcourseaccess') }} as last_course_access_at,
    nullif(group_ids, '') as group_ids,
    extracted_at as seen_at
from {{ source('moodle_raw', 'enrolments') }}
