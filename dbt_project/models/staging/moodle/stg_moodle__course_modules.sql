{# What keeps an activity off a student's phone, as core_course_get_contents told the token's user
   (course/externallib.php get_course_contents): visible 0 (hidden), visibleoncoursepage 0 (stealth: reachable by
   its link, not listed), or a restriction: the "Restrict access" JSON (sent only to a user who may see hidden
   activities or edit the course; an empty tree restricts nothing), the reason the token's user may not enter it
   (availabilityinfo), or uservisible false. Rows extracted before these columns existed read NULL: shown. #}
with modules as (
    select
        *,
        coalesce(visibleoncoursepage, 1) = 1 as on_course_page,
        coalesce(
            (
                nullif(trim(availability), '') is not null
                and trim(availability) != 'null'
                and replace(availability, ' ', '') not like '%"c":[]%'
            )
            or nullif(trim(availabilityinfo), '') is not null
            or uservisible = false,
            false
        ) as restricted
    from {{ source('moodle_raw', 'course_modules') }}
)

select
    id as course_module_id,
    course_id,
    section_id,
    position as position_in_section,
    modname as module_type,
    {{ plain_text('name') }} as module_name,
    url as module_url,
    visible = 1 as is_visible,
    completion as completion_tracking,
    on_course_page as is_on_course_page,
    restricted as is_restricted,
    nullif(trim(availability), '') as availability_json,
    nullif(trim(availabilityinfo), '') as availability_info,
    {{ moodle_ts('due_at') }} as due_at,
    coalesce(visible = 1, false) and on_course_page and not restricted as is_offline_visible,
    extracted_at
from modules
