"""The scheduling recipes in deploy/ (cron, systemd, GitHub Actions, the environment file), tested as far as this
machine allows without a running systemd, a cron daemon or GitHub: systemd's own checker on the units and the
timers' calendars, the cron lines read field by field and run through /bin/sh with stand-ins for runuser and the
connector, the workflow read as YAML and its run step run through bash with a stand-in, and every file scanned
for anything that looks like a real secret.

The connector's exit codes (README, "Failure modes"; `moodle-commcare sync`): 0 success; 10 success with warnings;
4, 5, 6 and 130 failed but safe to retry; 1, 2, 3, 7, 8, 9 failed, for a person.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest
import yaml

from moodle_commcare.failures import ExitCode

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
CRON = DEPLOY / "cron" / "moodle-commcare"
SYSTEMD = DEPLOY / "systemd"
WORKFLOW = DEPLOY / "github-actions" / "moodle-commcare-sync.yml"
ENV_EXAMPLE = DEPLOY / "env.example"

SYNC, FULL = "moodle-commcare-sync", "moodle-commcare-full-refresh"
UNITS = [SYSTEMD / f"{name}.{kind}" for name in (SYNC, FULL) for kind in ("service", "timer")]

TRUE = shutil.which("true") or sys.executable  # an executable that exists, for ExecStart= under verify
SUCCESS_WITH_WARNINGS = 10
RETRY_SAFE = {4, 5, 6, 130}
NEEDS_A_PERSON = {1, 2, 3, 7, 8, 9}
SECRET_NAMES = ("SOURCES__MOODLE__CREDENTIALS__TOKEN", "COMMCARE__API_KEY")
SETTING_NAMES = ("SOURCES__MOODLE__BASE_URL", "SOURCES__MOODLE__CREDENTIALS__TOKEN", "COMMCARE__BASE_URL",
                 "COMMCARE__PROJECT", "COMMCARE__USERNAME", "COMMCARE__API_KEY")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

Slot = Tuple[str, int, int]  # (day, hour, minute) a schedule starts a run at


# --- reading the files ----------------------------------------------------------------------------------------

def unit(path: Path) -> Dict[str, List[Tuple[str, str]]]:
    """A systemd unit file as {section: [(key, value), …]}, keys repeated as systemd allows."""
    sections: Dict[str, List[Tuple[str, str]]] = {}
    current: Optional[List[Tuple[str, str]]] = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} before any section"
        assert not line.endswith("\\"), f"{path.name}: keep settings on one line: {line!r}"
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def setting(path: Path, section: str, key: str) -> Optional[str]:
    values = [v for k, v in unit(path).get(section, []) if k == key]
    assert len(values) <= 1, f"{path.name}: {key}= given {len(values)} times"
    return values[0] if values else None


def codes(path: Path, key: str) -> Set[int]:
    value = setting(path, "Service", key)
    return {int(word) for word in value.split()} if value else set()


def seconds(span: str) -> int:
    """A systemd time span of the simple kinds the units use: 4h, 30min, 90s, 1h 30min."""
    units = {"h": 3600, "min": 60, "s": 1}
    parts = re.findall(r"(\d+)\s*(h|min|s)\b", span)
    assert parts and "".join(n + u for n, u in parts) == span.replace(" ", ""), f"unexpected time span {span!r}"
    return sum(int(n) * units[u] for n, u in parts)


def cron_file() -> Tuple[Dict[str, str], List[List[str]]]:
    """The cron.d file's variable lines, and its job lines split as cron splits them: five time fields, the user,
    the command."""
    variables: Dict[str, str] = {}
    jobs: List[List[str]] = []
    for raw in CRON.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assignment = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line)
        if assignment:
            variables[assignment.group(1)] = assignment.group(2)
            continue
        fields = line.split(None, 6)
        assert len(fields) == 7, f"a cron.d job is five time fields, a user and a command: {line!r}"
        jobs.append(fields)
    return variables, jobs


def cron_field(text: str, low: int, high: int) -> Set[int]:
    """One time field (numbers, ranges, lists, *, steps) as the values it matches."""
    values: Set[int] = set()
    for part in text.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            start, end = (int(x) for x in base.split("-"))
        else:
            start = end = int(base)
        assert low <= start <= end <= high, f"{text!r} out of {low}..{high}"
        values.update(range(start, end + 1, int(step) if step else 1))
    return values


def cron_slots(fields: List[str]) -> Set[Slot]:
    minute, hour, dom, month, dow = fields[:5]
    assert dom == "*" and month == "*", "the recipes run on days of the week"
    days = {DAYS[(d - 1) % 7] for d in cron_field(dow, 0, 7)}  # cron: 0 and 7 are Sunday
    return {(day, h, m) for day in days for h in cron_field(hour, 0, 23) for m in cron_field(minute, 0, 59)}


def calendar_slots(expression: str) -> Set[Slot]:
    """The OnCalendar= forms the timers use, `Mon..Sat *-*-* 02:15:00` and `Sun *-*-* 02:15:00`, as slots (read
    here so the schedules are compared even where systemd-analyze is missing; it checks this reading below)."""
    match = re.fullmatch(r"(\w{3})(?:\.\.(\w{3}))? \*-\*-\* (\d\d):(\d\d):00", expression)
    assert match, f"OnCalendar={expression!r}: expected 'Day[..Day] *-*-* HH:MM:00'"
    first, last, hour, minute = match.groups()
    days = DAYS[DAYS.index(first):DAYS.index(last or first) + 1]
    return {(day, int(hour), int(minute)) for day in days}


def workflow() -> Dict[str, Any]:
    loaded = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(loaded, dict)
    if True in loaded:  # YAML 1.1 reads the key `on` as true
        loaded["on"] = loaded.pop(True)
    return loaded


def workflow_steps() -> List[Dict[str, Any]]:
    jobs = workflow()["jobs"]
    assert len(jobs) == 1
    return list(next(iter(jobs.values()))["steps"])


def sync_step() -> Dict[str, Any]:
    [step] = [s for s in workflow_steps() if "moodle-commcare sync" in s.get("run", "")]
    return step


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here")
    return tool


def run_analyze(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}
    return subprocess.run([systemd_analyze(), *args], capture_output=True, text=True, env=env, timeout=120)


def stand_in(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(0o755)
    return path


# --- systemd --------------------------------------------------------------------------------------------------

def verify_works_here(tmp_path: Path) -> Set[str]:
    """Whether `systemd-analyze verify` can work in this container at all, tried on a control unit (skipping the
    test with what verify said when it cannot), and what it prints for a good unit: noise to ignore."""
    control = tmp_path / "control.service"
    control.write_text(f"[Unit]\nDescription=control\n\n[Service]\nType=exec\nExecStart={TRUE}\n")
    checked = run_analyze("verify", "--man=no", str(control))
    if checked.returncode != 0:
        pytest.skip(f"systemd-analyze verify cannot run here: {(checked.stderr or checked.stdout).strip()[:300]}")
    return set((checked.stdout + checked.stderr).splitlines())


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own checker on the four units, ExecStart's program swapped for one that exists here (verify
    refuses a command it cannot find). Verify prints unknown keys and bad values as warnings and still exits 0,
    so it must print nothing either."""
    noise = verify_works_here(tmp_path)
    copies = []
    for path in UNITS:
        text = path.read_text()
        if path.suffix == ".service":
            exec_start = setting(path, "Service", "ExecStart")
            assert exec_start is not None
            text = text.replace(f"ExecStart={exec_start.split()[0]} ", f"ExecStart={TRUE} ")
            assert f"ExecStart={TRUE} sync " in text
        copy = tmp_path / path.name
        copy.write_text(text)
        copies.append(str(copy))
    verified = run_analyze("verify", "--man=no", *copies)
    said = [line for line in (verified.stdout + verified.stderr).splitlines() if line not in noise]
    assert verified.returncode == 0 and not said, "\n".join(said)


def test_systemd_analyze_verify_would_catch_a_bad_setting(tmp_path: Path) -> None:
    """The test above is not vacuous: a misspelt key is reported (as a warning, exit 0), and so is a value
    systemd cannot read."""
    noise = verify_works_here(tmp_path)
    bad = tmp_path / "bad.service"
    bad.write_text(f"[Service]\nType=exec\nExecStart={TRUE}\nRuntimeMaxSek=4h\nRestartSec=4 hourz\n")
    verified = run_analyze("verify", "--man=no", str(bad))
    said = "\n".join(line for line in (verified.stdout + verified.stderr).splitlines() if line not in noise)
    assert "RuntimeMaxSek" in said and "4 hourz" in said, said


def test_timer_calendars_parse_and_elapse_when_this_test_reads_them() -> None:
    """`systemd-analyze calendar` accepts each OnCalendar= and, from a fixed Monday, lists two weeks of starts
    that are the slots calendar_slots reads (the other tests compare those with cron's and the workflow's)."""
    control = run_analyze("calendar", "daily")
    if control.returncode != 0:
        pytest.skip(f"systemd-analyze calendar cannot run here: {control.stderr.strip()[:300]}")
    for name in (SYNC, FULL):
        expression = setting(SYSTEMD / f"{name}.timer", "Timer", "OnCalendar")
        assert expression is not None
        parsed = run_analyze("calendar", "--iterations=14", "--base-time=2024-01-01 00:00:00", expression)
        if parsed.returncode != 0 and "base-time" in parsed.stderr:  # an older systemd: parse only
            parsed = run_analyze("calendar", expression)
            assert parsed.returncode == 0, parsed.stderr
            continue
        assert parsed.returncode == 0, parsed.stderr
        starts = re.findall(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) 2024-\d\d-\d\d (\d\d):(\d\d):00 UTC", parsed.stdout)
        assert len(starts) == 14, parsed.stdout
        assert {(day, int(h), int(m)) for day, h, m in starts} == calendar_slots(expression)


def test_timers_start_their_services_nightly_and_weekly_never_together() -> None:
    nightly = calendar_slots(setting(SYSTEMD / f"{SYNC}.timer", "Timer", "OnCalendar") or "")
    weekly = calendar_slots(setting(SYSTEMD / f"{FULL}.timer", "Timer", "OnCalendar") or "")
    assert {day for day, _, _ in nightly} == set(DAYS[:6]) and {day for day, _, _ in weekly} == {"Sun"}
    assert not nightly & weekly
    for name in (SYNC, FULL):
        timer = SYSTEMD / f"{name}.timer"
        assert setting(timer, "Timer", "Unit") in (None, f"{name}.service")
        assert setting(timer, "Timer", "Persistent") == "true"
        assert seconds(setting(timer, "Timer", "RandomizedDelaySec") or "") <= 3600
        assert setting(timer, "Install", "WantedBy") == "timers.target"


def test_services_run_the_sync_as_the_readme_lays_out() -> None:
    variables, _ = cron_file()
    for name in (SYNC, FULL):
        service = SYSTEMD / f"{name}.service"
        exec_start = (setting(service, "Service", "ExecStart") or "").split()
        assert exec_start[:4] == [variables["MC_BIN"], "sync", "--warehouse", f"{variables['MC_DIR']}/moodle.duckdb"]
        assert ("--full-refresh" in exec_start) == (name == FULL)
        assert setting(service, "Service", "WorkingDirectory") == variables["MC_DIR"]
        assert setting(service, "Service", "EnvironmentFile") == variables["MC_ENV"]
        assert setting(service, "Service", "User") == variables["MC_USER"]
        for key, value in (("NoNewPrivileges", "true"), ("ProtectSystem", "strict"), ("PrivateTmp", "true"),
                           ("ReadWritePaths", variables["MC_DIR"]), ("UMask", "0077")):
            assert setting(service, "Service", key) == value, f"{name}: {key}"
        assert setting(service, "Service", "Type") in ("exec", "oneshot")
        limit = "TimeoutStartSec" if setting(service, "Service", "Type") == "oneshot" else "RuntimeMaxSec"
        assert seconds(setting(service, "Service", limit) or "") >= 3 * 3600, "a first run takes ~8 minutes; give hours"


def test_the_full_refresh_waits_for_a_sync_instead_of_stopping_it() -> None:
    service = SYSTEMD / f"{FULL}.service"
    exec_start = (setting(service, "Service", "ExecStart") or "").split()
    wait = int(exec_start[exec_start.index("--wait") + 1])
    assert wait > 0
    assert seconds(setting(service, "Service", "RuntimeMaxSec") or "") > wait + 3600
    assert f"{SYNC}.service" in (setting(service, "Unit", "After") or "").split()
    for name in (SYNC, FULL):  # Conflicts= would stop a run under way
        assert setting(SYSTEMD / f"{name}.service", "Unit", "Conflicts") is None


def test_exit_codes_in_the_units_are_the_documented_ones() -> None:
    documented = {int(code) for code in ExitCode}
    assert RETRY_SAFE | NEEDS_A_PERSON <= documented, "the codes the recipes name are the connector's"
    for name in (SYNC, FULL):
        service = SYSTEMD / f"{name}.service"
        assert codes(service, "SuccessExitStatus") == {SUCCESS_WITH_WARNINGS}
        restarted = codes(service, "RestartForceExitStatus")
        assert restarted == {ExitCode.MOODLE, ExitCode.COMMCARE, ExitCode.BUSY} and restarted <= RETRY_SAFE
        assert not codes(service, "RestartPreventExitStatus") & RETRY_SAFE
        # only those codes restart: no Restart= policy of its own, which would restart on any failure
        assert setting(service, "Service", "Restart") in (None, "no")
        # systemd (252 here, 255 too) refuses RestartForceExitStatus= in a Type=oneshot unit
        assert setting(service, "Service", "Type") != "oneshot"
        assert seconds(setting(service, "Service", "RestartSec") or "") >= 60
        retries = int(setting(service, "Unit", "StartLimitBurst") or 0)
        assert 1 < retries <= 5, "a bounded number of tries"


# --- cron -----------------------------------------------------------------------------------------------------

def test_cron_lines_have_five_time_fields_a_user_and_a_command() -> None:
    variables, jobs = cron_file()
    assert variables["SHELL"] == "/bin/sh" and "MAILTO" in variables
    assert len(jobs) == 2
    for fields in jobs:
        assert fields[5] == "root", "root reads the root-only env file, then runuser drops to the service user"
        command = fields[6]
        assert "%" not in command, "cron turns an unescaped % into a newline"
        assert 'runuser -u "$MC_USER" -- "$MC_BIN" sync --warehouse "$MC_DIR/moodle.duckdb"' in command
        assert command.startswith('cd "$MC_DIR" && umask 077 && set -a && . "$MC_ENV" && set +a')
        assert "flock" not in command, "the connector's run lock already keeps runs apart"
    assert sum("--full-refresh" in fields[6] for fields in jobs) == 1


def test_cron_schedules_are_the_timers() -> None:
    _, jobs = cron_file()
    by_kind = {("weekly" if "--full-refresh" in fields[6] else "nightly"): cron_slots(fields) for fields in jobs}
    assert by_kind["nightly"] == calendar_slots(setting(SYSTEMD / f"{SYNC}.timer", "Timer", "OnCalendar") or "")
    assert by_kind["weekly"] == calendar_slots(setting(SYSTEMD / f"{FULL}.timer", "Timer", "OnCalendar") or "")
    assert not by_kind["nightly"] & by_kind["weekly"], "never at the same minute of the same day"


@pytest.mark.parametrize("exit_code", [0, SUCCESS_WITH_WARNINGS, 4, 2])
def test_cron_commands_run_as_cron_runs_them(tmp_path: Path, exit_code: int) -> None:
    """Each job's command through /bin/sh, as cron runs it, with the cron file's variables pointing into tmp_path,
    env.example as the settings file, and stand-ins for runuser (drops `-u user --`) and the connector (records
    what it was given, exits with the code under test). cron mails what a job prints: nothing on 0 and 10, one
    line naming the code otherwise."""
    if shutil.which("sh") is None:
        pytest.skip("no /bin/sh")
    variables, jobs = cron_file()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in(bin_dir / "runuser", '#!/bin/sh\n[ "$1" = -u ] && shift 2\n[ "$1" = -- ] && shift\nexec "$@"\n')
    record = tmp_path / "record.txt"
    connector = stand_in(tmp_path / "moodle-commcare", f"""#!/bin/sh
{{ echo "args: $*"; echo "cwd: $(pwd)"; echo "umask: $(umask)"
   echo "token: $SOURCES__MOODLE__CREDENTIALS__TOKEN"; echo "project: $COMMCARE__PROJECT"; }} >> "{record}"
echo "the connector's own output"
exit {exit_code}
""")
    install = tmp_path / "var-lib"
    install.mkdir()
    log = tmp_path / "sync.log"
    env = {**variables, "PATH": f"{bin_dir}:/usr/bin:/bin", "MC_DIR": str(install), "MC_ENV": str(ENV_EXAMPLE),
           "MC_BIN": str(connector), "MC_USER": "nobody", "MC_LOG": str(log), "HOME": str(tmp_path)}
    for fields in jobs:
        record.unlink(missing_ok=True)
        ran = subprocess.run([variables["SHELL"], "-c", fields[6]], env=env, capture_output=True, text=True,
                             timeout=60)
        assert ran.stderr == ""
        if exit_code in (0, SUCCESS_WITH_WARNINGS):
            assert ran.stdout == ""
        else:
            assert ran.stdout.strip().endswith(f"failed with exit code {exit_code}: see {log}")
            assert len(ran.stdout.splitlines()) == 1
        seen = record.read_text()
        full = " --full-refresh" if "--full-refresh" in fields[6] else ""
        assert f"args: sync --warehouse {install}/moodle.duckdb{full}\n" in seen
        assert f"cwd: {install}\n" in seen and "umask: 0077\n" in seen
        assert "token: replace-with-the-moodle-web-service-token\n" in seen  # env.example, read by /bin/sh
        assert "project: replace-with-the-project-space\n" in seen
    logged = log.read_text()
    assert logged.count("the connector's own output") == 2
    assert "nightly sync" in logged and "weekly full refresh" in logged


# --- the environment file -------------------------------------------------------------------------------------

def test_env_example_names_every_setting_with_placeholders_only() -> None:
    text = ENV_EXAMPLE.read_text()
    assert "chmod 600" in text.split("\n\n")[0], "the header says to keep it root-only"
    assigned: Dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        # the subset systemd's EnvironmentFile= and /bin/sh read alike
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=([^\s'\"$`\\#;]*|'[^']*')", line)
        assert match, f"not a plain NAME=value line: {line!r}"
        assigned[match.group(1)] = match.group(2)
    assert set(SETTING_NAMES) <= set(assigned) and "MOODLE_COMMCARE_WAREHOUSE" in assigned
    for name in ("SOURCES__MOODLE__CREDENTIALS__TOKEN", "COMMCARE__API_KEY", "COMMCARE__USERNAME",
                 "COMMCARE__PROJECT"):
        assert assigned[name].startswith("replace-with-"), name
    for name in ("SOURCES__MOODLE__BASE_URL", "COMMCARE__BASE_URL"):
        assert assigned[name].startswith("https://")
    variables, _ = cron_file()
    assert assigned["MOODLE_COMMCARE_WAREHOUSE"] == f"{variables['MC_DIR']}/moodle.duckdb"


# --- GitHub Actions -------------------------------------------------------------------------------------------

def test_workflow_is_a_template_not_a_workflow_of_this_repository() -> None:
    assert not (REPO / ".github" / "workflows" / WORKFLOW.name).exists()


def test_workflow_runs_the_sync_nightly_and_the_full_refresh_weekly() -> None:
    flow = workflow()
    crons = [entry["cron"] for entry in flow["on"]["schedule"]]
    assert len(crons) == 2 and "workflow_dispatch" in flow["on"]
    _, jobs = cron_file()
    assert {cron: cron_slots(cron.split()) for cron in crons} == {
        " ".join(fields[:5]): cron_slots(fields) for fields in jobs}, "the cron recipe's schedule, in UTC"
    weekly = next(" ".join(fields[:5]) for fields in jobs if "--full-refresh" in fields[6])
    full_refresh = sync_step()["env"]["FULL_REFRESH"]
    assert f"github.event.schedule == '{weekly}'" in full_refresh and "inputs.full_refresh" in full_refresh
    assert flow["concurrency"]["group"] and flow["concurrency"]["cancel-in-progress"] is False


def test_workflow_takes_secrets_only_from_github_secrets() -> None:
    env = workflow()["env"]
    assert set(SETTING_NAMES) <= set(env)
    for name in (*SECRET_NAMES, "COMMCARE__USERNAME"):
        assert env[name] == "${{ secrets.%s }}" % name  # dlt deploy's naming: the secret is named as its variable
    for name, value in env.items():
        if name not in (*SECRET_NAMES, "COMMCARE__USERNAME"):
            assert "secrets." not in str(value) and not re.search(r"TOKEN|API_KEY|PASSWORD", name), name


def test_workflow_keeps_the_warehouse_between_runs() -> None:
    steps = workflow_steps()
    uses = [step.get("uses", "") for step in steps]
    restore = steps[next(i for i, u in enumerate(uses) if u.startswith("actions/cache/restore@"))]
    save = steps[next(i for i, u in enumerate(uses) if u.startswith("actions/cache/save@"))]
    assert steps.index(restore) < steps.index(sync_step()) < steps.index(save)
    assert restore["with"]["path"] == save["with"]["path"] == "warehouse"
    assert restore["with"]["key"] == save["with"]["key"] and "github.run_id" in save["with"]["key"]
    assert save["with"]["key"].startswith(restore["with"]["restore-keys"])
    assert "always()" in save["if"], "a failed run's job journal is kept too"
    assert workflow()["env"]["MOODLE_COMMCARE_WAREHOUSE"].startswith("warehouse/")
    guard = next(s for s in steps if "cache-matched-key" in str(s.get("if", "")))
    assert "exit 1" in guard["run"] and steps.index(guard) < steps.index(sync_step())


@pytest.mark.parametrize("exit_code,full_refresh,expected", [
    (0, "false", 0), (SUCCESS_WITH_WARNINGS, "false", 0), (4, "true", 4), (3, "false", 3), (130, "true", 130)])
def test_workflow_sync_step_passes_0_and_10_and_fails_on_the_rest(tmp_path: Path, exit_code: int,
                                                                  full_refresh: str, expected: int) -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = sync_step()["run"]
    assert "${{" not in script, "expressions reach the script through env:, never pasted into it"
    record = tmp_path / "args.txt"
    stand_in(tmp_path / "moodle-commcare", f'#!/bin/sh\necho "$*" > "{record}"\nexit {exit_code}\n')
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "FULL_REFRESH": full_refresh,
           "MOODLE_COMMCARE_WAREHOUSE": "warehouse/moodle.duckdb"}
    # GitHub runs `run:` with bash -e (and pipefail)
    ran = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], env=env,
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == expected
    assert record.read_text().split() == ["sync", "--warehouse", "warehouse/moodle.duckdb",
                                          *(["--full-refresh"] if full_refresh == "true" else [])]
    assert ("::warning::" in ran.stdout) == (exit_code == SUCCESS_WITH_WARNINGS)


# --- no secrets -----------------------------------------------------------------------------------------------

SECRET_PATTERNS = [
    re.compile(r"\b[0-9a-fA-F]{32,}\b"),  # Moodle tokens are 32 hex digits; CommCare API keys are hex too
    # a long run of base64 or URL-safe characters, letters and digits mixed
    re.compile(r"(?<![\w/.-])(?=[A-Za-z0-9+/_]*\d)(?=[A-Za-z0-9+/_]*[A-Za-z])[A-Za-z0-9+/_]{24,}={0,2}(?![\w/.=-])"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b(ghp_|gho_|github_pat_|xox[bp]-|AKIA|sk-)[A-Za-z0-9_-]{8,}"),
    re.compile(r"https?://[^/\s:@]+:[^/\s@]+@"),  # credentials in an address
]
SECRET_ASSIGNMENT = re.compile(r"\b(\w*(?:TOKEN|API_KEY|PASSWORD|SECRET)\w*)\s*[=:]\s*(\$\{\{[^}]*\}\}|\S+)")
PLACEHOLDER = re.compile(r"""['"]?(replace-with-[a-z@.-]+|\$\{\{ secrets\.\w+ \}\}|\$\w+|"?\$\w+"?)['"]?""")


def looks_secret(text: str) -> List[str]:
    found = [m.group(0) for pattern in SECRET_PATTERNS for m in pattern.finditer(text)]
    for name, value in SECRET_ASSIGNMENT.findall(text):
        if not PLACEHOLDER.fullmatch(value):
            found.append(f"{name}={value}")
    return found


def test_no_file_in_deploy_holds_anything_like_a_real_secret() -> None:
    files = sorted(p for p in DEPLOY.rglob("*") if p.is_file())
    assert {ENV_EXAMPLE, CRON, WORKFLOW, *UNITS} <= set(files)
    for path in files:
        assert looks_secret(path.read_text()) == [], path.relative_to(REPO)


def test_the_secret_scan_would_see_a_real_one() -> None:
    token, key = secrets.token_hex(16), secrets.token_hex(20)  # made here, never stored in the repository
    assert looks_secret(f"SOURCES__MOODLE__CREDENTIALS__TOKEN={token}")
    assert looks_secret(f"  COMMCARE__API_KEY: {key}")
    assert looks_secret(f"COMMCARE__API_KEY={secrets.token_urlsafe(30)}")
    assert looks_secret("SOURCES__MOODLE__BASE_URL=https://ws-user:hunter2@moodle.example.org")
    assert not looks_secret(ENV_EXAMPLE.read_text())


def test_the_webhook_receivers_unit_passes_verify_and_runs_serve_webhooks(tmp_path: Path) -> None:
    unit = SYSTEMD / "moodle-commcare-webhooks.service"
    exec_start = setting(unit, "Service", "ExecStart")
    assert exec_start is not None and " serve-webhooks " in f"{exec_start} " and "--host 127.0.0.1" in exec_start
    noise = verify_works_here(tmp_path)
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(f"ExecStart={exec_start.split()[0]} ", f"ExecStart={TRUE} "))
    verified = run_analyze("verify", "--man=no", str(copy))
    said = [line for line in (verified.stdout + verified.stderr).splitlines() if line not in noise]
    assert verified.returncode == 0 and not said, "\n".join(said)
