-- The number SMS goes to, and why a number is missing: a number Moodle hid from the token's user is not "no phone".
-- The extract reads each phone as E.164, in the user's country when typed without a country code
-- (pipelines/moodle/readable.py); NULL where a number is empty, unparseable or impossible.
with hidden as (
    select count(*) > 0 as phones_hidden
    from {{ ref('stg_moodle__access_gaps') }}
    where gap_code = 'phones'
),

numbers as (
    select
        user_id,
        phone1,
        phone2,
        phone1_e164,
        phone2_e164
    from {{ ref('stg_moodle__users') }}
)

select
    n.*,
    case
        when coalesce(n.phone1_e164, n.phone2_e164) is not null then 'ok'
        when hidden.phones_hidden then 'hidden_by_moodle'
        when coalesce(n.phone1, n.phone2) is not null then 'invalid'
        else 'none'
    end as sms_phone_status
from numbers as n
cross join hidden
