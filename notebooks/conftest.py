"""nbval runs every tutorial. The worked solutions run in tests/test_course.py instead, each graded
strictly as a perfect student's submission (`course grade --strict`), where every one of its cells must
run and every exercise must score full marks: the same check, once."""


def pytest_ignore_collect(collection_path, config):
    if collection_path.parent.name == "solutions" and collection_path.suffix == ".ipynb":
        return True
    return None
