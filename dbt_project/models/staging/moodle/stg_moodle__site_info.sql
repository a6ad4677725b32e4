select
    siteurl as site_url,
    sitename as site_name,
    release as moodle_release,
    version as moodle_version,
    extracted_at
from {{ source('moodle_raw', 'site_info') }}
