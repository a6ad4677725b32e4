select
    user_id,
    course_id,
    progress as progress_percent,
    coalesce(completed, false) as is_course_completed,
    {{ moodle_ts('lastaccess') }} as last_course_access_at,
    extracted_at
from {{ source('moodle_raw', 'course_engagement') }}
