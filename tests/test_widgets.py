"""The t sliders of notebooks 03 and 04: each frame shows what the scorer says at that t, cached
text is pasted back exactly, and slider events are coalesced."""

import asyncio
import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from clipaln.projection import naive_scores
from clipaln.widgets import Frames, RetrievalWidget, TradeoffWidget

pytest.importorskip("ipywidgets")


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_a_cached_frame_equals_a_fresh_draw():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    title, line = ax.set_title(" "), ax.axvline(0.5)
    frames = Frames(fig, [line, title])
    title.set_text("t = 1.0")
    first = frames.render()
    title.set_text("t = 2.0")
    line.set_xdata([0.2, 0.2])
    other = frames.render()
    title.set_text("t = 1.0")
    line.set_xdata([0.5, 0.5])
    again = frames.render()  # the title's pixels come from the cache this time
    assert (pixels(again) == pixels(first)).all()
    assert (pixels(other) != pixels(first)).any()
    plt.close(fig)


@pytest.fixture(scope="module")
def trained(toy):
    from clipaln.tracks import typographic
    from clipaln.train import TrainConfig

    spec = typographic.toy_spec(n_train=320, n_test=64, n_val=0)
    feats = typographic.build_features(toy, spec, progress=False)
    W, _ = typographic.train(feats, TrainConfig(method="dpo", epochs=3, batch_size=64), progress=False)
    return spec, feats, W


def test_the_tradeoff_frame_follows_the_scorer(trained):
    from clipaln.tracks import typographic

    spec, feats, W = trained
    sweep = typographic.Sweep(feats, W)
    idx = list(range(6))
    examples = [Image.new("RGB", (64, 64), (40 * i, 0, 0)) for i in idx]
    ui = TradeoffWidget(sweep, W, examples, feats.test.attacked[idx], feats.test.labels[idx].tolist(), spec.class_names)
    for t in (-1.0, 0.0, 1.0, 2.0):
        ms = ui.update(t)
        assert ms > 0
        pred = naive_scores(W, feats.test.attacked[idx], feats.texts, t).argmax(-1).tolist()
        assert [ax.title.get_text() for ax in ui.img_axes] == [spec.class_names[p] for p in pred]
        assert ui.ax.title.get_text().startswith(f"t = {t:.1f}:")
        assert ui.ui.image.value == ui.png
    ui.update(-1.0)
    at_minus_one = ui.png
    ui.update(1.0)
    assert at_minus_one != ui.png
    assert ui.snapshot().data == ui.png


def test_the_retrieval_frame_shows_the_ranking(toy):
    from clipaln.toyworld.datasets import ToyPeople
    from clipaln.tracks import gender
    from clipaln.train import TrainConfig

    spec = gender.toy_spec(n_train_per_cell=4, n_gallery_per_cell=4, seed=0)
    feats = gender.build_features(toy, spec, progress=False)
    W, _ = gender.train(feats, TrainConfig(method="dpo", epochs=2, batch_size=32), progress=False)
    gallery = ToyPeople(4, 0, "gallery")
    images = [gallery[i][0] for i in range(len(feats.gallery_labels))]
    sweep = gender.Sweep(feats, W, k=5)
    activity = feats.activities[0]
    ui = RetrievalWidget(sweep, images, activity)
    frame = pixels(ui.png)
    for t in (0.0, 1.0):
        ui.update(t)
        top = sweep.ranking(t, activity)
        assert ui.top == list(top)
        assert [ax.title.get_text() for ax in ui.axes] == [sweep.genders[i] for i in top]
        # each thumbnail sits in its box, pixel for pixel
        frame = pixels(ui.png)
        for ax, i in zip(ui.axes, top):
            r, c, side = ui.frames.box(ax)
            assert (frame[r : r + side, c : c + side] == ui.thumbs[i]).all()


def test_slider_events_are_coalesced(trained):
    from clipaln.tracks import typographic

    spec, feats, W = trained
    idx = [0, 1]
    examples = [Image.new("RGB", (64, 64)) for _ in idx]
    ui = TradeoffWidget(typographic.Sweep(feats, W), W, examples, feats.test.attacked[idx], [0, 1], spec.class_names)
    drawn = []
    update = ui.update
    ui.update = lambda t: drawn.append(t) or update(t)

    async def drag():
        for t in (0.1, 0.2, 0.3, 0.4):
            ui.slider.value = t
        await asyncio.sleep(0)

    asyncio.run(drag())
    assert drawn == [0.4]  # four events, one frame: the newest value
    ui.slider.value = -0.5  # no event loop: drawn at once
    assert drawn == [0.4, -0.5]
    assert ui.ax.title.get_text().startswith("t = -0.5:")
