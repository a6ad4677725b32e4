select
    id as course_module_id,
    course_id,
    section_id,
    position as position_in_section,
    modname as module_type,
    {{ plain_text('name') }} as module_name,
    url as module_url,
    visible = 1 as is_visible,
    completion as completion_tracking,
    extracted_at
from {{ source('moodle_raw', 'course_modules') }}
