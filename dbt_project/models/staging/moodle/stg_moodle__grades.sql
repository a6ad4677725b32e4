select
    course_id,
    user_id,
    grade_item_id,
    itemtype as item_type,
    itemmodule as item_module,
    cmid as course_module_id,
    coalesce(itemname, case when itemtype = 'course' then 'Course total' end) as item_name,
    graderaw as grade_raw,
    nullif(gradeformatted, '-') as grade_formatted,
    grademin as grade_min,
    grademax as grade_max,
    case when graderaw is not null and grademax > grademin
         then round((graderaw - grademin) / (grademax - grademin) * 100, 2) end as grade_percent,
    nullif(lettergradeformatted, '-') as grade_letter,
    {{ moodle_ts('gradedategraded') }} as graded_at,
    {{ moodle_ts('gradedatesubmitted') }} as submitted_at,
    coalesce(gradeishidden, false) as is_hidden,
    extracted_at
from {{ source('moodle_raw', 'grades') }}
qualify row_number() over (partition by course_id, user_id, grade_item_id order by extracted_at desc) = 1
