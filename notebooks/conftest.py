"""nbval runs every tutorial and worked-solutions notebook. A solutions notebook with autograded exercises
runs in tests/test_course.py instead, graded as a perfect student's submission, where every one of its
cells must run and every exercise must score full marks: the same check, once."""

import json

import pytest


def pytest_ignore_collect(collection_path, config):
    if collection_path.parent.name == "solutions" and collection_path.suffix == ".ipynb":
        cells = json.loads(collection_path.read_text())["cells"]
        if any("clipaln" in cell.get("metadata", {}) for cell in cells):
            return True
    return None


def pytest_collection_modifyitems(config, items):
    """A notebook's cells run in one kernel, in order: under pytest-xdist (`--dist loadgroup`) each
    notebook's cells go to one worker, while the tests spread over the workers one by one."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
