select
    course_id,
    user_id,
    grade_item_id,
    itemtype as item_type,
    itemtype in ('mod', 'manual') as is_gradable,  -- category subtotals and the course total are not
    itemmodule as item_module,
    cmid as course_module_id,
    coalesce({{ plain_text('itemname') }}, case when itemtype = 'course' then 'Course total' end) as item_name,
    graderaw as grade_raw,
    nullif({{ plain_text('gradeformatted') }}, '-') as grade_formatted,  -- without the pass/fail icon markup
    grademin as grade_min,  -- NULL when the course hides ranges
    grademax as grade_max,
    coalesce(
        case
            when graderaw is not null and grademax > grademin
                then {{ round_double('(graderaw - grademin) / (grademax - grademin) * 100', 2) }}
        end,
        {{ leading_number('percentageformatted') }}
    ) as grade_percent,
    nullif(lettergradeformatted, '-') as grade_letter,  -- only when the user report shows letters
    {{ moodle_ts('gradedategraded') }} as graded_at,
    {{ moodle_ts('gradedatesubmitted') }} as submitted_at,
    coalesce(gradeishidden, false) as is_hidden,
    extracted_at
from {{ source('moodle_raw', 'grades') }}
