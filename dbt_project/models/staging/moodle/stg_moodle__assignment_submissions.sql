-- A team assignment's submission belongs to the group: user_id 0, group_id set (mod/assign/locallib.php).
select
    id as submission_id,
    assignment_id,
    userid as user_id,
    nullif(groupid, 0) as group_id,
    status as submission_status,
    {{ moodle_ts('timecreated') }} as created_at,
    {{ moodle_ts('timemodified') }} as modified_at,
    extracted_at
from {{ source('moodle_raw', 'assignment_submissions') }}
