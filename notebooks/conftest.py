"""nbval runs the tutorials, each cell of which must run. Two kinds of notebook run elsewhere, under a
stricter check, so that nothing runs twice: the worked solutions in tests/test_course.py, each graded
strictly as a perfect student's submission (`course grade --strict`: every cell must run and every
exercise must score full marks), and notebook 03 in tests/test_notebooks_cold.py, from an empty
feature cache, where every cell must run and print no noise."""

RUN_ELSEWHERE = {"03_ocr_vs_detection.ipynb"}


def pytest_ignore_collect(collection_path, config):
    if collection_path.suffix == ".ipynb" and (
        collection_path.parent.name == "solutions" or collection_path.name in RUN_ELSEWHERE
    ):
        return True
    return None
