-- Students with no CommCare mobile worker of their own, listed once a programme maps anyone (or when a worker id is
-- given to several students): they stay coach-only, and nothing of their own is sent. Map them in
-- seeds/commcare_student_workers.csv (or the profile field named by var commcare_student_worker_field).
with phones as (  -- students' own phones are in use once anyone is mapped
    select count(commcare_user_id) > 0 as in_use
    from {{ ref('int_commcare__student_workers') }}
)

select
    st.external_id as student_external_id,
    w.user_id as moodle_user_id,
    st.username as moodle_username,
    st.active_course_count,
    w.unmapped_reason as reason
from {{ ref('int_commcare__student_workers') }} as w
inner join {{ ref('int_commcare__students') }} as st using (user_id)
cross join phones
where
    w.commcare_user_id is null
    and not st.should_close
    and (w.mapped_by is not null or phones.in_use)
