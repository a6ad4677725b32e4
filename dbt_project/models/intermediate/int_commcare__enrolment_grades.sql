{{ config(materialized='table') }}  -- every grade row of the site reduces to one row per enrolment, once per build
-- Final grade, number of graded items and a compact summary a phone can show offline, per student and course.
-- Only real gradable items count (activities and manual items, not category subtotals). Hidden items stay off the
-- phone, and so does a course total that includes one: the student's own report blanks it (Moodle's default
-- "hide totals if they contain hidden items"), and a token that may see hidden grades must not leak it.
with visible_items as (
    select * from {{ ref('stg_moodle__grades') }}
    where not is_hidden
),

hides_total as (
    select
        course_id,
        user_id
    from {{ ref('stg_moodle__grades') }}
    where is_hidden and grade_raw is not null
    group by course_id, user_id
)

select
    i.course_id,
    i.user_id,
    max(case when i.item_type = 'course' and h.user_id is null then i.grade_raw end) as final_grade_raw,
    max(case when i.item_type = 'course' and h.user_id is null then i.grade_formatted end) as final_grade_formatted,
    max(case when i.item_type = 'course' and h.user_id is null then i.grade_percent end) as final_grade_percent,
    max(case when i.item_type = 'course' and h.user_id is null then i.grade_letter end) as final_grade_letter,
    count(case when i.is_gradable and i.grade_raw is not null then 1 end) as graded_items,
    count(case when i.is_gradable then 1 end) as grade_items,
    left(string_agg(
        case
            when i.is_gradable then
                i.item_name || ': ' || {{ grade_text('i') }}
        end, '; ' order by i.grade_item_id
    ), 1000) as grade_summary
from visible_items as i
left join hides_total as h using (course_id, user_id)
group by i.course_id, i.user_id
