#!/usr/bin/python3
"""Summarise JUnit XML result files (cmocka's XML output, pytest --junitxml).

Usage: summary.py FILE.xml...

Prints the name of every failed test, then one final line:
    check: N passed, N failed, N skipped
("failed" includes errors). Exits 1 when a test failed, a file could not be
read, or no test was found at all.
"""

import sys
import xml.etree.ElementTree as ET


def testcases(root):
    """Yield (suite name, testcase element) for each testcase in a file."""
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    for suite in suites:
        for case in suite.iter("testcase"):
            yield suite.get("name", "?"), case


def case_name(suite, case):
    name = case.get("name", "?")
    classname = case.get("classname")
    if classname:
        return f"{classname}::{name}"
    return f"{suite}::{name}"


def main(argv):
    passed = failed = skipped = 0
    failures = []
    for path in argv:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as e:
            failed += 1
            failures.append(f"{path}: unreadable result file ({e})")
            continue
        for suite, case in testcases(root):
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
                failures.append(case_name(suite, case))
            elif case.find("skipped") is not None:
                skipped += 1
            else:
                passed += 1
    for name in failures:
        print(f"FAILED {name}")
    print(f"check: {passed} passed, {failed} failed, {skipped} skipped")
    if failed or passed + failed + skipped == 0:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
