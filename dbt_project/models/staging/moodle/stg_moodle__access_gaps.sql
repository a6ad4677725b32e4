-- Data Moodle hid from the token's user in the latest run (gaps of older runs no longer hold).
select
    g.code as gap_code,
    g.what as gap_description,
    g.fix as gap_fix,
    g.accepted as is_accepted
from {{ source('moodle_raw', 'access_gaps') }} as g
where g.extracted_at = (select max(s.extracted_at) from {{ source('moodle_raw', 'site_info') }} as s)
