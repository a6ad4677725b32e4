-- Final grade, number of graded items and a compact summary a phone can show offline, per student and course.
with items as (
    select * from {{ ref('stg_moodle__grades') }} where not is_hidden
)

select
    course_id,
    user_id,
    max(case when item_type = 'course' then grade_raw end) as final_grade_raw,
    max(case when item_type = 'course' then grade_formatted end) as final_grade_formatted,
    max(case when item_type = 'course' then grade_percent end) as final_grade_percent,
    max(case when item_type = 'course' then grade_letter end) as final_grade_letter,
    count(case when item_type <> 'course' and grade_raw is not null then 1 end) as graded_items,
    count(case when item_type <> 'course' then 1 end) as grade_items,
    left(string_agg(
        case when item_type <> 'course' then
            item_name || ': ' || coalesce(format('{:g}', round(grade_raw, 2)), '-') || '/' || format('{:g}', round(grade_max, 2))
        end, '; ' order by grade_item_id), 1000) as grade_summary
from items
group by course_id, user_id
