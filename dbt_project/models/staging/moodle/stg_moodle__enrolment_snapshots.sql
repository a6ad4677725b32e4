select
    course_id,
    enrolled_count,
    extracted_at as snapshot_at
from {{ source('moodle_raw', 'enrolment_snapshots') }}
qualify row_number() over (partition by course_id order by extracted_at desc) = 1
