"""Serve the Moodle emulator in its own process: `python -m emulators.moodle --students 15000 --latency 0.025`.

Prints one JSON line with base_url and token (and, with --participants-report, the custom report's id), then serves
until killed. Benchmarks run it this way so the emulator's work does not share a process (or a GIL, or a memory
figure) with the connector.
"""

import argparse
import json

from emulators import serve_until_interrupted

from . import reports
from .access import PROFILES
from .school import SchoolSpec
from .server import MAX_INPUT_VARS, MoodleEmulator
from .site import VERSIONS, SiteConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name, default in (("courses", 12), ("students", 150), ("grade-items", 5), ("activities", 6), ("assignments", 2),
                          ("port", 0), ("seed", 42)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--enrolments-per-student", type=float, default=3.0)
    parser.add_argument("--student-phones", type=float, default=0.0,
                        help="share of students whose profile names their own CommCare mobile worker")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--now", type=int, default=None)
    parser.add_argument("--profile", default="integration", help="who the token acts as: " + ", ".join(PROFILES))
    parser.add_argument("--moodle-version", default="4.5", choices=sorted(VERSIONS))
    parser.add_argument("--batch-function", action="store_true",
                        help="the token's service holds tool_mobile_call_external_functions (an admin added it)")
    parser.add_argument("--max-input-vars", type=int, default=MAX_INPUT_VARS,
                        help="php.ini max_input_vars: variables past it are dropped without a word")
    parser.add_argument("--participants-report", action="store_true",
                        help="an admin built the README's custom report on the Course participants source (its id is "
                             "printed as participants_report), the token's user in its audience")
    args = parser.parse_args()
    spec = SchoolSpec(seed=args.seed, courses=args.courses, students=args.students, grade_items=args.grade_items,
                      activities=args.activities, assignments=args.assignments,
                      enrolments_per_student=args.enrolments_per_student, student_phones=args.student_phones)
    if args.now:
        spec.now = args.now
    site = SiteConfig.recommended(version=args.moodle_version)
    with MoodleEmulator(spec=spec, latency=args.latency, port=args.port, control=True, profile=args.profile,
                        site=site, batch_function=args.batch_function, max_input_vars=args.max_input_vars) as moodle:
        started = {"base_url": moodle.base_url, "token": moodle.token, "now": spec.now}
        if args.participants_report:
            # core_reportbuilder_retrieve_report answers it (reports.py); the columns, sorting and "Remove any
            # duplicate rows" of reports.RECOMMENDED, the version's default conditions, the token's user as audience
            started["participants_report"] = moodle.add_report(
                **reports.RECOMMENDED, audience=[moodle.school.service_users[args.profile]])
        print(json.dumps(started), flush=True)
        serve_until_interrupted()


if __name__ == "__main__":
    main()
