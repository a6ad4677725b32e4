select
    id as user_id,
    username,
    firstname as first_name,
    lastname as last_name,
    coalesce(nullif(trim(fullname), ''), trim(concat_ws(' ', firstname, lastname))) as full_name,
    nullif(trim(email), '') as email,
    nullif(trim(phone1), '') as phone1,
    nullif(trim(phone2), '') as phone2,
    nullif(trim(address), '') as address,
    nullif(trim(city), '') as city,
    nullif(upper(trim(country)), '') as country_code,
    nullif(trim(idnumber), '') as user_idnumber,
    nullif(trim(institution), '') as institution,
    nullif(trim(department), '') as department,
    {{ moodle_ts('firstaccess') }} as first_site_access_at,
    {{ moodle_ts('lastaccess') }} as last_site_access_at,
    coalesce(suspended, false) as is_suspended,
    auth as auth_method,
    customfields as custom_fields,
    extracted_at
from {{ source('moodle_raw', 'users') }}
qualify row_number() over (partition by id order by extracted_at desc) = 1
