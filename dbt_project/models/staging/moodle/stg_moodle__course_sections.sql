select
    id as section_id,
    course_id,
    section as section_number,
    coalesce(nullif({{ plain_text('name') }}, ''), 'Section ' || section) as section_name,
    visible = 1 as is_visible,
    extracted_at
from {{ source('moodle_raw', 'course_sections') }}
