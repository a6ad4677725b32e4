-- Student cases for CommCare's bulk import (case type `student`). Cases without an owner are left out
-- here and listed in commcare_unowned_cases: a case without an owner never reaches a phone.
select
    'student' as case_type,
    external_id,
    case_name as name,
    owner_id,
    user_id as moodle_user_id,
    first_name,
    last_name,
    email,
    username as moodle_username,
    user_idnumber as moodle_idnumber,
    city,
    country_code as country,
    institution,
    department,
    phone_raw,
    phone_e164,
    phone2_raw,
    phone2_e164,
    sms_phone,
    sms_phone_status,
    cast(last_site_access as date) as last_site_access,
    active_course_count,
    engagement_status,
    case when should_close then 'yes' end as close
from {{ ref('int_commcare__students') }}
where owner_id is not null
