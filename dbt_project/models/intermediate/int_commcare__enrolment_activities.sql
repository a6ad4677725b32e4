-- Activity completion per student and course: done out of the activities that track completion.
with tracked as (
    select
        course_id,
        count(*) as activities_total
    from {{ ref('stg_moodle__course_modules') }}
    where completion_tracking > 0
    group by course_id
),

done as (
    select
        course_id,
        user_id,
        count(case when is_done then 1 end) as activities_done
    from {{ ref('stg_moodle__activity_completion') }}
    group by course_id, user_id
)

select
    e.course_id,
    e.user_id,
    coalesce(d.activities_done, 0) as activities_done,
    coalesce(t.activities_total, 0) as activities_total,
    case
        when t.activities_total > 0
            then {{ round_double('100.0 * coalesce(d.activities_done, 0) / cast(t.activities_total as '
                ~ type_double() ~ ')', 1) }}
    end as activities_percent
from {{ ref('int_moodle__enrolments') }} as e
inner join {{ ref('stg_moodle__courses') }} as c using (course_id)
left join tracked as t using (course_id)
left join done as d using (course_id, user_id)
where e.is_student and c.has_completion_tracking
