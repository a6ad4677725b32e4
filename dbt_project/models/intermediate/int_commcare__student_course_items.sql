{{ config(materialized='table') }}
-- What a student's own phone shows of one course, per student-course case: their grade per item, each
-- activity's completion, what is overdue, still to do, and what went in late. Only what the outline shows (no
-- hidden, stealth or restricted activity) and only grade items Moodle shows the student (not hidden ones).
with mapped as (  -- the pairs with a case, so a case being closed keeps its values (a blank cell clears one)
    select
        course_id,
        user_id
    from {{ ref('int_commcare__student_course_scope') }}
),

activities as (
    select * from {{ ref('int_commcare__offline_activities') }}
),

grade_lines as (
    select
        g.course_id,
        g.user_id,
        row_number() over (
            partition by g.course_id, g.user_id order by a.outline_position nulls last, g.grade_item_id
        ) as line_order,  -- activities in the outline's order, then manual items
        g.item_name || ': ' || {{ grade_text('g') }} as line
    from {{ ref('stg_moodle__grades') }} as g
    inner join mapped using (course_id, user_id)
    left join activities as a using (course_id, course_module_id)
    where g.is_gradable and not g.is_hidden and (g.course_module_id is null or a.course_module_id is not null)
),

completion_lines as (
    select
        a.course_id,
        c.user_id,
        a.outline_position as line_order,
        a.module_name || ': ' || case
            when c.is_done then 'done' when c.completion_state = 3 then 'failed' else 'not done'
        end as line,
        c.is_done
    from activities as a
    inner join {{ ref('stg_moodle__activity_completion') }} as c using (course_id, course_module_id)
    inner join mapped using (course_id, user_id)
    where a.completion_tracking > 0
),

assignments as (
    select
        sa.*,
        ' (due ' || coalesce({{ phone_date('sa.due_at') }}, 'no date') || ')' as due_note,
        row_number() over (
            partition by sa.course_id, sa.user_id order by sa.due_at nulls last, sa.assignment_id
        ) as line_order  -- by date; no date last
    from {{ ref('int_commcare__student_assignments') }} as sa
    inner join mapped using (course_id, user_id)
    inner join activities using (course_id, course_module_id)
),

overdue_lines as (
    select
        course_id,
        user_id,
        line_order,
        assignment_name || due_note as line
    from assignments
    where is_missing
),

to_do_lines as (
    select
        course_id,
        user_id,
        line_order,
        assignment_name || due_note as line
    from assignments
    where submitted_at is null and (due_at is null or due_at >= {{ as_of() }})
),

late_lines as (
    select
        course_id,
        user_id,
        line_order,
        assignment_name || due_note || ', submitted ' || {{ phone_date('submitted_at') }} as line
    from assignments
    where is_late
),

next_due as (
    select
        course_id,
        user_id,
        {{ min_by('assignment_name', 'line_order') }} as next_due_item,  -- the first of to_do's order
        cast(min(due_at) as date) as next_due_date
    from assignments
    where submitted_at is null and due_at >= {{ as_of() }}
    group by course_id, user_id
),

grades as (
    {{ phone_text('grade_lines', ['course_id', 'user_id']) }}
),

completion as (
    {{ phone_text('completion_lines', ['course_id', 'user_id']) }}
),

overdue as (
    {{ phone_text('overdue_lines', ['course_id', 'user_id']) }}
),

to_do as (
    {{ phone_text('to_do_lines', ['course_id', 'user_id']) }}
),

late as (
    {{ phone_text('late_lines', ['course_id', 'user_id']) }}
),

done as (
    select
        course_id,
        user_id,
        count(case when is_done then 1 end) as activities_done,
        count(*) as activities_tracked
    from completion_lines
    group by course_id, user_id
)

select
    e.course_id,
    e.user_id,
    g.text as grades,
    c.text as completion,
    d.activities_done,
    d.activities_tracked,
    o.text as overdue,
    coalesce(o.line_count, 0) as overdue_count,
    t.text as to_do,
    coalesce(t.line_count, 0) as to_do_count,
    l.text as submitted_late,
    coalesce(l.line_count, 0) as late_count,
    n.next_due_item,
    n.next_due_date
from mapped as e
left join grades as g using (course_id, user_id)
left join completion as c using (course_id, user_id)
left join done as d using (course_id, user_id)
left join overdue as o using (course_id, user_id)
left join to_do as t using (course_id, user_id)
left join late as l using (course_id, user_id)
left join next_due as n using (course_id, user_id)
