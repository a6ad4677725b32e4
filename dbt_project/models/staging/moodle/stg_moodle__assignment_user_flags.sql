-- Extensions: a student's own later due date (assign_user_flags.extensionduedate, 0 = none).
select
    assignment_id,
    user_id,
    {{ moodle_ts('extensionduedate') }} as extension_due_at,
    extracted_at
from {{ source('moodle_raw', 'assignment_user_flags') }}
qualify row_number() over (partition by assignment_id, user_id order by extracted_at desc) = 1
