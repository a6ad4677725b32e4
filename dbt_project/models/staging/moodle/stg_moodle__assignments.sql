select
    id as assignment_id,
    course_id,
    cmid as course_module_id,
    {{ plain_text('name') }} as assignment_name,
    {{ moodle_ts('duedate') }} as due_at,
    {{ moodle_ts('cutoffdate') }} as cutoff_at,
    {{ moodle_ts('allowsubmissionsfromdate') }} as opens_at,
    coalesce(nosubmissions = 1, false) as is_offline,
    coalesce(teamsubmission = 1, false) as is_team_submission,
    extracted_at
from {{ source('moodle_raw', 'assignments') }}
