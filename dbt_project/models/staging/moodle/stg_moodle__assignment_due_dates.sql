-- Each student's dates with their user or group override applied (only when the extract reads overrides).
select
    assignment_id,
    user_id,
    {{ moodle_ts('duedate') }} as due_at,
    {{ moodle_ts('cutoffdate') }} as cutoff_at,
    extracted_at
from {{ source('moodle_raw', 'assignment_due_dates') }}
