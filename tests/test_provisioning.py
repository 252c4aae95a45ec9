"""Bulk provisioning through the local stack, as an administrator does it: an HR file (seed 000 Appendix 2),
encrypted with age to the stack's provisioning recipient, dropped into the provisioning bucket under
`incoming/` (applied) or `dry-run/` (planned only). The provisioner reports every row in the reports bucket;
the users appear in the Cognito pool with their attributes, department group and enabled state.
"""

from __future__ import annotations

import json
import time
import uuid

import pyrage
import pytest

from helpers import aws_client, cognito_user

REPORT_WITHIN = 30  # seconds: the bucket is watched twice a second, a run takes well under a second

APPENDIX_2 = (
    "user_id,name,email,department,job_title,phone,start_date,end_date,status\n"
    "001,山田太郎,taro.yamada@example.com,営業部,主任,03-1234-5678,2023/04/01,,active\n"
    "002,鈴木花子,hanako.suzuki@example.com,人事部,課長,03-2345-6789,2023/04/01,,active\n"
    "003,佐藤一郎,ichiro.sato@example.com,システム部,部長,03-3456-7890,2023/04/01,,active\n"
    "004,田中裕子,yuko.tanaka@example.com,経理部,担当,03-4567-8901,2023/04/01,2023/06/30,inactive\n"
    "005,高橋健一,kenichi.takahashi@example.com,営業部,課長代理,03-5678-9012,2023/04/01,,active\n"
)
# config/gateway.json: the departments whose names the sample uses.
EXPECTED_DEPARTMENT = {"001": "sales", "002": "hr", "003": "engineering", "004": "accounting", "005": "sales"}


def encrypt(state: dict, plaintext: bytes) -> bytes:
    recipient = pyrage.x25519.Recipient.from_str(state["provisioning"]["recipient"])
    return pyrage.encrypt(plaintext, [recipient])


def drop(state: dict, prefix: str, body: bytes) -> dict:
    """Puts a file under `prefix` and returns its run's JSON report."""
    name = f"hr-{uuid.uuid4().hex[:8]}.csv.age"
    s3 = aws_client(state, "s3")
    s3.put_object(Bucket=state["provisioning"]["bucket"], Key=f"{prefix}{name}", Body=body)
    deadline = time.monotonic() + REPORT_WITHIN
    while time.monotonic() < deadline:
        listed = s3.list_objects_v2(Bucket=state["provisioning"]["reports_bucket"], Prefix="reports/provisioning/")
        keys = [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(f"-{name}.json")]
        if keys:
            body = s3.get_object(Bucket=state["provisioning"]["reports_bucket"], Key=keys[0])["Body"].read()
            return json.loads(body)
        time.sleep(0.3)
    pytest.fail(f"no report for {prefix}{name} within {REPORT_WITHIN} s")


def report_csv(state: dict, report_key_suffix: str) -> str:
    s3 = aws_client(state, "s3")
    listed = s3.list_objects_v2(Bucket=state["provisioning"]["reports_bucket"], Prefix="reports/provisioning/")
    key = next(o["Key"] for o in listed["Contents"] if o["Key"].endswith(report_key_suffix))
    return s3.get_object(Bucket=state["provisioning"]["reports_bucket"], Key=key)["Body"].read().decode("utf-8-sig")


@pytest.fixture(scope="module")
def appendix_2_applied(state) -> dict:
    return drop(state, "incoming/", encrypt(state, APPENDIX_2.encode("utf-8")))


def test_appendix_2_yields_four_enabled_users_and_one_disabled(state, appendix_2_applied):
    report = appendix_2_applied
    assert report["file_error"] is None and report["dry_run"] is False, report
    assert report["counts"] == {"created": 5, "updated": 0, "unchanged": 0, "rejected": 0, "failed": 0}, report
    assert [r["line"] for r in sorted(report["rows"], key=lambda r: r["line"])] == [2, 3, 4, 5, 6]
    for user_id, department in EXPECTED_DEPARTMENT.items():
        found = cognito_user(state, user_id)
        assert found is not None, user_id
        assert found["enabled"] is (user_id != "004"), (user_id, found)
        assert found["groups"] == [f"dept-{department}"], (user_id, found)
        attributes = found["attributes"]
        assert attributes["custom:user_id"] == user_id, "the employee number keeps its leading zeros"
        assert attributes["custom:department"] == department
        assert attributes["custom:start_date"] == "2023-04-01"
        assert attributes["custom:status"] == ("inactive" if user_id == "004" else "active")
    yamada = cognito_user(state, "001")["attributes"]
    assert (yamada["name"], yamada["email"], yamada["custom:job_title"], yamada["custom:phone"]) == (
        "山田太郎", "taro.yamada@example.com", "主任", "03-1234-5678")
    assert cognito_user(state, "004")["attributes"]["custom:end_date"] == "2023-06-30"


def test_the_same_file_again_changes_nothing(state, appendix_2_applied):
    again = drop(state, "incoming/", encrypt(state, APPENDIX_2.encode("utf-8")))
    assert again["counts"] == {"created": 0, "updated": 0, "unchanged": 5, "rejected": 0, "failed": 0}, again


def test_the_file_as_excel_saves_it_in_cp932_with_crlf_gives_the_same_result(state, appendix_2_applied):
    excel = APPENDIX_2.replace("\n", "\r\n").encode("cp932")
    report = drop(state, "incoming/", encrypt(state, excel))
    assert report["encoding"] == "cp932"
    assert report["counts"] == {"created": 0, "updated": 0, "unchanged": 5, "rejected": 0, "failed": 0}, report
    with_bom = b"\xef\xbb\xbf" + APPENDIX_2.encode("utf-8")
    report = drop(state, "incoming/", encrypt(state, with_bom))
    assert report["encoding"] == "utf-8-bom" and report["counts"]["unchanged"] == 5, report


def test_bad_rows_are_reported_with_their_line_and_good_rows_applied(state):
    tag = uuid.uuid4().hex[:6]
    rows = (
        "user_id,name,email,department,job_title,phone,start_date,end_date,status\r\n"
        f"g{tag}1,Good One,one.{tag}@example.com,Sales,,+81-3-1234-5678,2024/4/1,,active\r\n"
        f"=cmd|'/c calc'!A1,Evil,evil.{tag}@example.com,Sales,,,2024/4/1,,active\r\n"
        f"g{tag}2,Bad Mail,not-a-mail,Sales,,,2024/4/1,,active\r\n"
        f"g{tag}3,Backwards,three.{tag}@example.com,Sales,,,2024/4/1,2024/3/1,active\r\n"
        f"g{tag}4,Nowhere,four.{tag}@example.com,購買部,,,2024/4/1,,active\r\n"
        f"g{tag}1,Twice,twice.{tag}@example.com,Sales,,,2024/4/1,,active\r\n"
        f"g{tag}5,Future Starter,five.{tag}@example.com,Accounting,,,2099/1/1,,active\r\n"
    )
    report = drop(state, "incoming/", encrypt(state, rows.encode("utf-8")))
    assert report["counts"] == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 5, "failed": 0}, report
    by_line = {r["line"]: r for r in report["rows"]}
    assert "formula" in by_line[3]["detail"] and by_line[3]["user_id"] is not None
    assert "email is not an address" in by_line[4]["detail"]
    assert "before start_date" in by_line[5]["detail"]
    assert "not configured" in by_line[6]["detail"]
    assert "repeats row 2" in by_line[7]["detail"]
    assert cognito_user(state, f"g{tag}1")["enabled"] is True
    assert cognito_user(state, f"g{tag}5")["enabled"] is False, "a future starter is created disabled"
    for absent in (f"g{tag}2", f"g{tag}3", f"g{tag}4"):
        assert cognito_user(state, absent) is None
    # The CSV report is formula-safe: the rejected user_id is written as text.
    csv_report = report_csv(state, report["source_key"].rsplit("/", 1)[1] + ".csv")
    assert "'=cmd" in csv_report and "\n=cmd" not in csv_report


def test_a_dry_run_reports_the_plan_and_applies_nothing(state):
    user_id = f"d{uuid.uuid4().hex[:8]}"
    rows = (
        "user_id,name,email,department,job_title,phone,start_date,end_date,status\n"
        f"{user_id},Dry Run,{user_id}@example.com,Engineering,,,2024/4/1,,active\n"
    )
    report = drop(state, "dry-run/", encrypt(state, rows.encode("utf-8")))
    assert report["dry_run"] is True
    assert report["counts"]["created"] == 1, report
    assert cognito_user(state, user_id) is None, "a dry run created the user"


@pytest.mark.parametrize("case", ["plaintext", "another key", "truncated"])
def test_files_that_cannot_be_read_are_refused_whole(state, case):
    user_id = f"x{uuid.uuid4().hex[:8]}"
    plaintext = (
        "user_id,name,email,department,job_title,phone,start_date,end_date,status\n"
        f"{user_id},Never,{user_id}@example.com,Engineering,,,2024/4/1,,active\n"
    ).encode("utf-8")
    if case == "plaintext":
        body = plaintext
    elif case == "another key":
        body = pyrage.encrypt(plaintext, [pyrage.x25519.Identity.generate().to_public()])
    else:
        body = encrypt(state, plaintext * 2000)[:-200]
    report = drop(state, "incoming/", body)
    expected = {"plaintext": "not age-encrypted", "another key": "not encrypted to this deployment",
                "truncated": "damaged or truncated"}[case]
    assert report["file_error"] and expected in report["file_error"], report
    assert report["rows"] == [] and report["encoding"] is None
    assert cognito_user(state, user_id) is None
