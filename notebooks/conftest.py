"""nbval runs every tutorial and worked-solutions notebook. A solutions notebook with autograded exercises
runs in tests/test_course.py instead, graded as a perfect student's submission, where every one of its
cells must run and every exercise must score full marks: the same check, once."""

import json


def pytest_ignore_collect(collection_path, config):
    if collection_path.parent.name == "solutions" and collection_path.suffix == ".ipynb":
        cells = json.loads(collection_path.read_text())["cells"]
        if any("clipaln" in cell.get("metadata", {}) for cell in cells):
            return True
    return None
