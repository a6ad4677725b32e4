select
    id as course_id,
    {{ plain_text('shortname') }} as course_shortname,
    {{ plain_text('fullname') }} as course_fullname,
    nullif(idnumber, '') as course_idnumber,  -- only a role with moodle/course:update sees it
    categoryid as category_id,
    summary as course_summary,
    format as course_format,
    {{ moodle_ts('startdate') }} as course_start_at,
    {{ moodle_ts('enddate') }} as course_end_at,
    visible = 1 as is_visible,
    coalesce(groupmode, 0) as group_mode,  -- 0 no groups, 1 separate, 2 visible
    coalesce(enablecompletion = 1, false) as has_completion_tracking,
    {{ moodle_ts('timecreated') }} as created_at,
    {{ moodle_ts('timemodified') }} as modified_at,
    extracted_at
from {{ source('moodle_raw', 'courses') }}
