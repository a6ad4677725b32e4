{{ config(materialized='table') }}
-- Which student-course cases exist: every enrolment of a student with a CommCare mobile worker, plus, to close
-- them, those sent earlier for a student who has none now (read from the export's ledger in this warehouse). A
-- student never mapped has no row, and nothing is ever sent for them.
{% set ledger = adapter.get_relation(
    database=target.database, schema='commcare_export', identifier='case_ledger'
) if execute else none %}
with candidates as (
    select
        se.course_id,
        se.user_id,
        'moodle-' || se.site_key || '-sc-' || se.course_id || '-' || se.user_id as external_id,
        w.commcare_user_id
    from {{ ref('int_commcare__student_enrolments') }} as se
    inner join {{ ref('int_commcare__student_workers') }} as w using (user_id)
)
{% if ledger %}
, sent as (
    select external_id
    from {{ ledger }}
    where case_type = 'student_course' and in_commcare in ('yes', 'maybe') and not closed
)
{% endif %}

select
    course_id,
    user_id,
    external_id,
    commcare_user_id as owner_id
from candidates
where commcare_user_id is not null
{% if ledger %}or external_id in (select external_id from sent){% endif %}
