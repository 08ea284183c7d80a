"""The experiments, one module each, held to one contract (`protocol.Track`: make_spec,
build_features, train_config, train, evaluate), and registered in TRACKS, which the command line's
`train` and `eval` read their tasks from:

- typographic: resisting typographic attacks, the OCR-vs-detection trade-off (docs/method.md section 4);
- gender: reversing and neutralising gender in retrieval (docs/method.md section 5);
- pairs: your own task, (image, chosen caption, rejected caption) rows;
- phenomena: what the toy CLIP does, measured on fresh images (`clipaln eval toy`; not a track).

A new track is one module and one line: `register("name", module)` from Python, or, for the command
line, `name = "module"` under the entry-point group "clipaln.tracks" of an installed package
(CONTRIBUTING.md).
"""

import re

from . import gender, pairs, phenomena, typographic
from .protocol import Track

TRACKS: dict[str, Track] = {"typographic": typographic, "gender": gender, "pairs": pairs}


def register(name: str, track: Track) -> None:
    """Add a track under `name` (lower-case letters, digits, '-' or '_'), so that `clipaln train NAME`
    and `clipaln eval NAME` run it. It must have the Track protocol's functions; a taken name is refused."""
    if not (isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_-]*", name)) or name == "toy":
        raise ValueError(f"a track's name is lower-case letters, digits, '-' or '_' (not 'toy'), got {name!r}")
    if name in TRACKS:
        raise ValueError(f"a track named {name!r} is registered already")
    if not isinstance(track, Track):
        missing = [
            m for m in ("make_spec", "build_features", "train_config", "train", "evaluate") if not hasattr(track, m)
        ]
        raise ValueError(f"the track {name!r} lacks {', '.join(missing)} (clipaln.tracks.protocol.Track)")
    TRACKS[name] = track


#: Installed packages name their tracks here (`words = "my_package.words"`); the CLI loads them at start.
ENTRY_POINTS = "clipaln.tracks"
#: Track plugins that failed to load: name -> why (one line, for the command that asks for them).
FAILED_PLUGINS: dict[str, str] = {}


def load_plugins() -> list[str]:
    """Register every installed package's tracks (entry-point group "clipaln.tracks"); their names.
    One that fails to load or to register costs only itself: why is kept in FAILED_PLUGINS."""
    from importlib.metadata import entry_points

    added = []
    for ep in entry_points(group=ENTRY_POINTS):
        if ep.name in TRACKS:
            continue
        try:
            register(ep.name, ep.load())
            added.append(ep.name)
        except BaseException as e:  # SystemExit and KeyboardInterrupt at import too: a plugin's, not ours
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            FAILED_PLUGINS[ep.name] = f"the track plugin {ep.name!r} ({ep.value}) failed to load: {reason}"
    return added


__all__ = ["TRACKS", "Track", "gender", "load_plugins", "pairs", "phenomena", "register", "typographic"]
