{{ config(materialized='table') }}  -- read by both student-course marts and the unowned report
-- Each student's own CommCare mobile worker: a row of seeds/commcare_student_workers.csv or of var
-- commcare_student_workers (by Moodle username), else the Moodle custom profile field named by var
-- commcare_student_worker_field. A worker id given to more than
-- one student is refused for all of them: one phone would get several students' grades.
{% set field = var('commcare_student_worker_field') %}
with listed as (
    select
        moodle_username,
        commcare_user_id
    from {{ ref('commcare_student_workers') }}
    {% for row in var('commcare_student_workers') %}
    union all
    select '{{ row["moodle_username"] | replace("'", "''") }}', '{{ row["commcare_user_id"] | replace("'", "''") }}'
    {% endfor %}
),

by_seed as (  -- a username listed twice with different workers maps to neither
    select
        u.user_id,
        case when count(distinct trim(s.commcare_user_id)) = 1 then min(trim(s.commcare_user_id)) end as commcare_user_id
    from listed as s
    inner join {{ ref('stg_moodle__users') }} as u on lower(u.username) = lower(trim(s.moodle_username))
    where nullif(trim(s.commcare_user_id), '') is not null
    group by u.user_id
),

{% if field %}
by_field as (
    select
        user_id,
        nullif(trim({{ json_text('custom_fields', field) }}), '') as commcare_user_id
    from {{ ref('stg_moodle__users') }}
),
{% endif %}

students as (
    select distinct user_id from {{ ref('int_commcare__student_enrolments') }}
),

chosen as (
    select
        st.user_id,
        coalesce(sd.commcare_user_id, {% if field %}f.commcare_user_id{% else %}null{% endif %}) as commcare_user_id,
        case
            when sd.commcare_user_id is not null then 'seed'{% if field %}
            when f.commcare_user_id is not null then 'profile_field'{% endif %}
        end as mapped_by
    from students as st
    left join by_seed as sd using (user_id)
    {% if field %}left join by_field as f using (user_id){% endif %}
)

select
    user_id,
    case when count(*) over (partition by commcare_user_id) = 1 then commcare_user_id end as commcare_user_id,
    mapped_by,
    case
        when commcare_user_id is null then 'no CommCare mobile worker is mapped to this student'
        when count(*) over (partition by commcare_user_id) > 1
            then
                'CommCare user ' || commcare_user_id || ' is mapped to '
                || count(*) over (partition by commcare_user_id) || ' Moodle students'
    end as unmapped_reason
from chosen
