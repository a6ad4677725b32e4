-- Extensions: a student's own later due date (assign_user_flags.extensionduedate, 0 = none).
select
    assignment_id,
    user_id,
    {{ moodle_ts('extensionduedate') }} as extension_due_at,
    extracted_at
from {{ source('moodle_raw', 'assignment_user_flags') }}
