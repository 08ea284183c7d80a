"""Re-run the solutions notebooks in place and record each exercise's answer, the reference the hidden checks read.

    python benchmarks/course_answers.py [NN ...]

Writes `notebooks/solutions/answers.json`: {"01.1": {"kl_lam1": 0.0057, ...}, ...}. An answer that is a function
(01.5's loss) is recorded as {"function": name}; its check calls it instead of comparing numbers.
"""

import json
import sys
from pathlib import Path

from execute_notebooks import execute  # beside this script

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "notebooks" / "solutions"
ANSWERS = SOLUTIONS / "answers.json"
DUMP = """import json as _json
def _plain(v):
    if callable(v):
        return {"function": v.__name__}
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v
print(_json.dumps({k: _plain(v) for k, v in globals().items() if k.startswith("answer_")}))"""


def record(path: Path) -> dict:
    dumped = execute(path, last_cell=DUMP)
    text = "".join(o.get("text", "") for o in dumped.outputs if o.get("name") == "stdout")
    answers = json.loads(text.strip().splitlines()[-1])  # a stream may arrive in pieces
    return {f"{path.name[:2]}.{name.split('_')[1]}": value for name, value in answers.items()}


def main(only: list[str]) -> None:
    recorded = json.loads(ANSWERS.read_text()) if ANSWERS.exists() else {}
    for path in sorted(SOLUTIONS.glob("0*_solutions.ipynb")):
        if only and path.name[:2] not in only:
            continue
        recorded = {k: v for k, v in recorded.items() if not k.startswith(path.name[:2] + ".")}
        recorded.update(record(path))
        print(path.name, "recorded", flush=True)
    ANSWERS.write_text(json.dumps(dict(sorted(recorded.items())), indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
