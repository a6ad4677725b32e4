select
    course_id,
    enrolled_count,
    extracted_at as snapshot_at
from {{ source('moodle_raw', 'enrolment_snapshots') }}
