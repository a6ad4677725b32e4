{# A section a student's phone may show: visible, and neither restricted for the token's user (availabilityinfo, the
   reason Moodle gives) nor closed to it (uservisible false). Hidden sections reach only a token that may see them
   (moodle/course:viewhiddensections); the others never list them. #}
with sections as (
    select
        *,
        coalesce(nullif(trim(availabilityinfo), '') is not null or uservisible = false, false) as restricted
    from {{ source('moodle_raw', 'course_sections') }}
)

select
    id as section_id,
    course_id,
    section as section_number,
    coalesce(nullif({{ plain_text('name') }}, ''), 'Section ' || section) as section_name,
    visible = 1 as is_visible,
    restricted as is_restricted,
    nullif(trim(availabilityinfo), '') as availability_info,
    coalesce(visible = 1, false) and not restricted as is_offline_visible,
    extracted_at
from sections
