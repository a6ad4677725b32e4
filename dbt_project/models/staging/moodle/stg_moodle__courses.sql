select
    id as course_id,
    shortname as course_shortname,
    fullname as course_fullname,
    nullif(idnumber, '') as course_idnumber,
    categoryid as category_id,
    summary as course_summary,
    format as course_format,
    {{ moodle_ts('startdate') }} as course_start_at,
    {{ moodle_ts('enddate') }} as course_end_at,
    visible = 1 as is_visible,
    coalesce(enablecompletion = 1, false) as has_completion_tracking,
    {{ moodle_ts('timecreated') }} as created_at,
    {{ moodle_ts('timemodified') }} as modified_at,
    extracted_at
from {{ source('moodle_raw', 'courses') }}
qualify row_number() over (partition by id order by extracted_at desc) = 1
