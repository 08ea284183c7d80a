"""The t sliders of notebooks 03 and 04: each frame shows what the scorer says at that t, cached
text is pasted back exactly, and slider events are coalesced."""

import asyncio
import io
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from clipaln.players import GalleryPlayer
from clipaln.plots import RIGHT, WRONG, image_grid, marked
from clipaln.projection import naive_scores
from clipaln.train import TrainConfig
from clipaln.widgets import Frames, RetrievalWidget, TradeoffWidget

pytest.importorskip("ipywidgets")


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_a_cached_frame_equals_a_fresh_draw():
    fig, axes = plt.subplots(1, 3, figsize=(3, 2))
    line = axes[0].axvline(0.5)
    titles = [ax.set_title(" ", fontsize=8) for ax in axes]
    frames = Frames(fig, [line, *titles])
    # long labels: neighbours overlap, so those are drawn, never pasted from the cache
    for words in (["a", "b", "c"], ["staffordshire bull terrier", "american pit bull terrier", "pug"], ["a", "b", "c"],
                  ["pug", "american pit bull terrier", "b"], ["staffordshire bull terrier", "b", "pug"]):  # fmt: skip
        for t, w in zip(titles, words):
            t.set_text(w)
        assert (pixels(frames.render()) == pixels(frames.fresh())).all(), words
    assert len(frames.texts) >= 3  # the short, lone labels were cached
    plt.close(fig)


@pytest.fixture(scope="module")
def trained(toy):
    from clipaln.tracks import typographic

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
    names = [f"{c} ({'a long breed name ' * (i % 3)})" for i, c in enumerate(spec.class_names)]  # some overlap
    ui = TradeoffWidget(sweep, W, examples, feats.test.attacked[idx], feats.test.labels[idx].tolist(), names)
    for t in (-1.0, 0.0, 1.0, 2.0, 0.0, 1.0):
        ms = ui.update(t)
        assert ms > 0
        assert (pixels(ui.png) == pixels(ui.frames.fresh())).all()  # the cache pastes exactly what a draw gives
        pred = naive_scores(W, feats.test.attacked[idx], feats.texts, t).argmax(-1).tolist()
        labels = feats.test.labels[idx].tolist()
        assert [ax.title.get_text() for ax in ui.img_axes] == [
            marked(names[p], p == y)[0] for p, y in zip(pred, labels)
        ]
        assert [ax.title.get_color() for ax in ui.img_axes] == [marked("", p == y)[1] for p, y in zip(pred, labels)]
        assert ui.ax.title.get_text().startswith(f"t = {t:.1f}:")
        assert ui.ui.image.value == ui.png
    ui.update(-1.0)
    at_minus_one = ui.png
    ui.update(1.0)
    assert at_minus_one != ui.png
    assert ui.snapshot().data == ui.png


def test_the_retrieval_frame_shows_the_ranking(toy):
    from clipaln.tracks import gender

    spec = gender.toy_spec(n_train_per_cell=4, n_gallery_per_cell=4, seed=0)
    feats = gender.build_features(toy, spec, progress=False)
    W, _ = gender.train(feats, TrainConfig(method="dpo", epochs=2, batch_size=32), progress=False)
    gallery = spec.gallery_set
    images = [gallery[i][0] for i in range(len(feats.gallery_labels))]
    sweep = gender.Sweep(feats, W, k=5)
    activity = feats.activities[0]
    ui = RetrievalWidget(sweep, images, activity, choices=feats.activities[:2])
    assert all(ui.frames.cacheable())  # no label meets another: every one is drawn once per text
    for t in (0.0, 1.0, 0.0):
        ui.update(t)
        assert (pixels(ui.png) == pixels(ui.frames.fresh(ui._tiles()))).all()
        top = sweep.ranking(t, activity)
        assert ui.top == list(top)
        assert [ax.title.get_text() for ax in ui.axes] == [sweep.genders[i] for i in top]
        # each thumbnail sits in its box, pixel for pixel
        frame = pixels(ui.png)
        for ax, i in zip(ui.axes, top):
            r, c, side = ui.frames.box(ax)
            assert (frame[r : r + side, c : c + side] == ui.thumbs[i, side]).all()
    other = feats.activities[1]
    ui.menu.value = other  # the menu switches the prompt at the slider's t
    assert ui.top == list(sweep.ranking(ui.slider.value, other)) and feats.prompts[1] in ui.title.get_text()
    with pytest.raises(ValueError, match="among"):
        ui.select("flying")


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


def test_the_static_player_holds_a_frame_per_t_and_leaves_the_slider_alone(trained):
    import base64
    import re

    from clipaln.tracks import typographic

    spec, feats, W = trained
    idx = list(range(8))
    examples = [Image.new("RGB", (64, 64), (30 * i, 0, 0)) for i in idx]
    sweep, labels = typographic.Sweep(feats, W), feats.test.labels[idx].tolist()
    ui = TradeoffWidget(sweep, W, examples, feats.test.attacked[idx], labels, spec.class_names, t0=0.3)
    before = ui.png
    ts = [0.0, 0.5, 1.0]
    player = ui.player(ts, t0=0.45)
    assert ui.png == before and ui.slider.value == pytest.approx(0.3)  # the live widget is as it was
    assert player.start == 1 and len(player.frames) == 3
    for frame in player.frames:  # each frame is the widget's frame, as WebP, at its size
        im = Image.open(io.BytesIO(frame))
        assert im.format == "WEBP" and im.size == Image.open(io.BytesIO(before)).size == (720, 680)
    html = player._repr_html_()
    assert html.count("data:image/webp;base64,") == 2  # the first frame shown, and the script's prefix
    assert re.search(r'max="2"', html) and "t = 0.50" in html
    assert "max-width:720px" in html and 'data-font-px="15.3"' in html  # 11 pt at 100 dpi, the smallest text
    for frame in player.frames:
        assert base64.b64encode(frame).decode() in html
    assert ui.player(ts, t0=0.45).id == player.id  # the same frames give the same page
    with pytest.raises(ValueError, match="distinct"):
        ui.player([0.0, 0.0])
    # each frame's alt text (and the slider's spoken value) names its t and what it shows, and moves with it
    assert len(set(player.alts)) == 3 and all(
        a.startswith(f"t = {t:.2f}: accuracy O ") for a, t in zip(player.alts, ts)
    )
    ui.update(0.5)
    assert (
        player.alts[1] == "t = 0.50: " + ui.describe()
        and f"{sum(ui.predictions(0.5)[i] == labels[i] for i in idx)} of 8 right" in ui.describe()
    )
    assert f'alt="{player.alts[1]}"' in html and f'aria-valuetext="{player.alts[1]}"' in html
    assert "im.alt=alts[s.value]" in html and "the frame at t" not in html


def test_the_gallery_player_holds_every_prompt_of_the_menu(toy):
    import re

    from clipaln.tracks import gender
    from clipaln.train import TrainConfig

    spec = gender.toy_spec(n_train_per_cell=4, n_gallery_per_cell=4, seed=0)
    feats = gender.build_features(toy, spec, progress=False)
    W, _ = gender.train(feats, TrainConfig(method="dpo", epochs=2, batch_size=32), progress=False)
    images = [spec.gallery_set[i][0] for i in range(len(feats.gallery_labels))]
    menu = feats.activities[:3]
    ui = RetrievalWidget(gender.Sweep(feats, W, k=5), images, menu[1], t0=0.3, choices=menu)
    before = ui.png
    ts = [0.0, 0.5, 1.0]
    player = ui.player(ts, t0=0.45)
    assert ui.png == before and ui.activity == menu[1]  # the live widget is as it was
    assert player.start == 1 and player.prompt == 1 and len(player.frames) == 3
    slot = {}  # gallery index -> thumbnail index, one to one
    for activity, frames in zip(menu, player.frames):  # every (prompt, t): what the widget would show
        for t, (top, genders, line) in zip(ts, frames):
            want_top, want_genders, want_line = ui.frame(t, activity)
            assert all(slot.setdefault(g, i) == i for g, i in zip(want_top, top))
            assert (genders, line) == (want_genders, want_line)
    assert sorted(slot.values()) == list(range(len(player.thumbs)))  # each thumbnail once, only those shown
    html = player._repr_html_()
    assert html.count("<option") == 3 and html.count("<td") == 5 and html.count('class="clipaln-label"') == 5
    assert re.search(r'max="2"', html) and "t = 0.50" in html and ui.prompt(menu[1]) in html
    assert json.dumps(player.frames) in html
    top, genders, line = player.frames[1][1]
    assert f'alt="rank 1: {genders[0]}"' in html and f'aria-valuetext="t = 0.50: {line}"' in html
    with pytest.raises(ValueError, match="among"):
        ui.player(ts, prompts=["juggling"])
    assert {Image.open(io.BytesIO(b)).size for b in player.thumbs} == {(128, 128)}  # one size, the player's
    for activity in menu:  # and the live slider still pastes its own size after the player was made
        ui.select(activity)
        assert ui.update(0.7) > 0 and (pixels(ui.png) == pixels(ui.frames.fresh(ui._tiles()))).all()
    hostile = GalleryPlayer([0.0], ["p"], [[([0], ["</script><b>x</b>"], "c")]], player.thumbs[:1])
    assert hostile.html.count("</script>") == 1  # a label cannot close the player's script


def test_player_text_is_data_and_t_is_finite():
    """Everything in a player's script is JSON escaped for HTML (<, >, &, U+2028, U+2029), so no label
    ends the script, opens a comment or changes how the page after it is read; NaN or inf t is refused."""
    from clipaln.players import StaticPlayer

    thumb = io.BytesIO()
    Image.new("RGB", (4, 4)).save(thumb, format="png")
    for label in ("</script><b>x</b>", "<!--<script>", "a\u2028b", "&lt;"):
        html = GalleryPlayer([0.0], ["p"], [[([0], [label], label)]], [thumb.getvalue()]).html
        script = html[html.index("<script>") + len("<script>") : html.rindex("</script>")]
        assert not any(c in script.split("var s=")[0] for c in "<>&\u2028"), label  # the data part
        assert html.count("</script>") == 1
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            GalleryPlayer([0.0, bad], ["p"], [[([0], ["l"], "c")] * 2], [thumb.getvalue()])
        with pytest.raises(ValueError, match="finite"):
            StaticPlayer([bad], [thumb.getvalue()])


def test_right_and_wrong_are_marked_not_only_coloured():
    """A check or a cross on every title, in two colours told apart with every common colour-vision deficiency."""
    imgs = [Image.new("RGB", (8, 8)) for _ in range(3)]
    fig = image_grid(imgs, ["apple", "car", "key"], ncols=3, correct=[True, False, True])
    titles = [(ax.title.get_text(), ax.title.get_color()) for ax in fig.axes]
    plt.close(fig)
    assert titles == [("\u2713 apple", RIGHT), ("\u2717 car", WRONG), ("\u2713 key", RIGHT)]
    assert RIGHT.lower() == "#0072b2" and WRONG.lower() == "#d55e00"  # Okabe-Ito blue and vermillion


def test_the_static_player_refuses_what_it_cannot_show():
    from clipaln.players import StaticPlayer

    frames = [b"a", b"b", b"c"]
    for start in (99, -1, True):
        with pytest.raises(ValueError, match="start is the index of a frame"):
            StaticPlayer([0.0, 0.5, 1.0], frames, start=start)
    with pytest.raises(ValueError, match="must increase"):
        StaticPlayer([1.0, -1.0, 0.0], frames)
