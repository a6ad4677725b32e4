{{ config(materialized='table') }}
-- Each course's outline as a phone shows it offline: its sections (those with an activity a student may see) and
-- their activities in order, each with its kind and due date, as plain text.
with lines as (
    select
        course_id,
        section_number * 100000 as line_order,
        section_name as line
    from {{ ref('int_commcare__offline_activities') }}
    group by course_id, section_number, section_name

    union all

    select
        course_id,
        section_number * 100000 + position_in_section + 1 as line_order,
        '- ' || module_name || ' (' || {{ activity_kind('module_type') }}
        || coalesce(', due ' || {{ phone_date('due_at') }}, '') || ')' as line
    from {{ ref('int_commcare__offline_activities') }}
),

outline as (
    {{ phone_text('lines', ['course_id'], more='more lines online') }}
),

counts as (
    select
        course_id,
        count(distinct section_number) as outline_sections,
        count(*) as outline_activities
    from {{ ref('int_commcare__offline_activities') }}
    group by course_id
)

select
    c.course_id,
    coalesce(o.text, '') as outline,
    coalesce(n.outline_sections, 0) as outline_sections,
    coalesce(n.outline_activities, 0) as outline_activities,
    site.site_url || '/course/view.php?id=' || c.course_id as course_url
from {{ ref('stg_moodle__courses') }} as c
cross join {{ ref('int_moodle__site') }} as site
left join outline as o using (course_id)
left join counts as n using (course_id)
