select
    user_id,
    course_id,
    cmid as course_module_id,
    modname as module_type,
    state as completion_state,
    state in (1, 2) as is_done,  -- 1 complete, 2 complete with pass; 3 (fail) is not done
    {{ moodle_ts('timecompleted') }} as completed_at,
    extracted_at
from {{ source('moodle_raw', 'activity_completion') }}
