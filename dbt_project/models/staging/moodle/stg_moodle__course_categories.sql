select
    id as category_id,
    {{ plain_text('name') }} as category_name,
    nullif(idnumber, '') as category_idnumber,
    nullif(parent, 0) as parent_category_id,
    path as category_path,
    depth as category_depth,
    visible = 1 as is_visible,  -- NULL: only moodle/category:manage sees it
    {{ moodle_ts('timemodified') }} as modified_at,
    extracted_at
from {{ source('moodle_raw', 'course_categories') }}
