"""Run at the start of each kernel that executes a committed notebook (an IPython startup file, see
execute_notebooks.py): every figure the inline backend shows carries, in its output's metadata, the
size of the smallest text it draws, in the PNG's pixels (`{"clipaln": {"smallest_text_px": ...}}`).
The book's hook puts it on the figure's <img>, and benchmarks/book_every_page.py scales it by how
wide the page shows the image: the text a student reads, in screen pixels."""

from __future__ import annotations

from matplotlib.text import Text
from matplotlib_inline import backend_inline

_drawn: list[float] = []
_draw_text = Text.draw


def _recording_draw(self, renderer):
    if self.get_visible() and self.get_text().strip():
        _drawn.append(renderer.points_to_pixels(self.get_fontsize()))
    return _draw_text(self, renderer)


Text.draw = _recording_draw
_metadata = backend_inline._fetch_figure_metadata


def _with_smallest_text(fig):
    _drawn.clear()
    fig.canvas.draw()  # as the PNG will be: the same figure at the same dpi
    meta = dict(_metadata(fig) or {})
    if _drawn:
        meta["clipaln"] = {"smallest_text_px": round(min(_drawn), 2)}
    return meta or None


backend_inline._fetch_figure_metadata = _with_smallest_text
