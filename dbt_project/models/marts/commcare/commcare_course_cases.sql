-- Course cases (case type `course`): one per course a student with a CommCare mobile worker takes, with the
-- outline a phone shows offline. Owned by the course's owner (the owner map); a student's phone gets it as the
-- parent of the student's own student_course case (README: "Students' own phones"). A course without an owner is
-- left out and reported in commcare_unowned_cases, and so are its student_course cases.
with per_course as (
    select
        course_id,
        bool_and(should_close) as all_closing
    from {{ ref('int_commcare__student_courses') }}
    group by course_id
)

select
    'course' as case_type,
    'moodle-' || site.site_key || '-c-' || c.course_id as external_id,
    left(c.course_fullname, 255) as name,
    o.owner_id,
    c.course_id as moodle_course_id,
    c.course_shortname,
    c.course_fullname,
    cast(c.course_start_at as date) as course_start_date,
    cast(c.course_end_at as date) as course_end_date,
    ol.course_url,
    ol.outline,
    ol.outline_sections,
    ol.outline_activities,
    case when pc.all_closing then 'yes' end as close
from per_course as pc
cross join {{ ref('int_moodle__site') }} as site
inner join {{ ref('stg_moodle__courses') }} as c using (course_id)
inner join {{ ref('int_commcare__course_owners') }} as o using (course_id)
inner join {{ ref('int_commcare__course_outline') }} as ol using (course_id)
where o.owner_id is not null
