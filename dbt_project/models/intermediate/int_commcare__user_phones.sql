-- E.164 numbers for SMS, read in the user's country when typed without a country code.
select
    user_id,
    phone1,
    phone2,
    e164(phone1, coalesce(country_code, {{ "'" ~ var('default_phone_region') ~ "'" if var('default_phone_region') else 'null' }})) as phone1_e164,
    e164(phone2, coalesce(country_code, {{ "'" ~ var('default_phone_region') ~ "'" if var('default_phone_region') else 'null' }})) as phone2_e164
from {{ ref('stg_moodle__users') }}
