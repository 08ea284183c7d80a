"""ImageNet class names by WordNet id, and the standard ImageNet-100 subset.

Folders of ImageNet (and of ImageNet-100, the paper's training set) are named by WordNet id
(n01440764/...). The readable names are open_clip's zero-shot class names (the ones CLIP's ImageNet
evaluation uses), matched to ids through the 1000 ids in sorted order, which timm ships.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

#: The 100 classes of ImageNet-100 (Tian et al., Contrastive Multiview Coding, 2020), the subset
#: the paper trains on.
IMAGENET100_WNIDS = tuple(
    """
    n02869837 n01749939 n02488291 n02107142 n13037406 n02091831 n04517823 n04589890 n03062245 n01773797
    n01735189 n07831146 n07753275 n03085013 n04485082 n02105505 n01983481 n02788148 n03530642 n04435653
    n02086910 n02859443 n13040303 n03594734 n02085620 n02099849 n01558993 n04493381 n02109047 n04111531
    n02877765 n04429376 n02009229 n01978455 n02106550 n01820546 n01692333 n07714571 n02974003 n02114855
    n03785016 n03764736 n03775546 n02087046 n07836838 n04099969 n04592741 n03891251 n02701002 n03379051
    n02259212 n07715103 n03947888 n04026417 n02326432 n03637318 n01980166 n02113799 n02086240 n03903868
    n02483362 n04127249 n02089973 n03017168 n02093428 n02804414 n02396427 n04418357 n02172182 n01729322
    n02113978 n03787032 n02089867 n02119022 n03777754 n04238763 n02231487 n03032252 n02138441 n02104029
    n03837869 n03494278 n04136333 n03794056 n03492542 n02018207 n04067472 n03930630 n03584829 n02123045
    n04229816 n02100583 n03642806 n04336792 n03259280 n02116738 n02108089 n03424325 n01855672 n02090622
    """.split()
)


@cache
def wnid_names() -> dict[str, str]:
    """WordNet id -> open_clip's readable ImageNet class name, for the 1000 ImageNet-1k classes."""
    import timm  # an open_clip dependency; imported here because only wnid folders need it
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    synsets = (Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt").read_text().split()
    if len(synsets) != len(IMAGENET_CLASSNAMES):
        raise RuntimeError("timm's ImageNet synset list does not match open_clip's 1000 class names")
    return dict(zip(synsets, IMAGENET_CLASSNAMES, strict=True))


def readable(folder_names: list[str]) -> list[str] | None:
    """Readable class names when every folder is an ImageNet WordNet id, else None."""
    if not folder_names or not all(f.startswith("n") and f[1:].isdigit() and len(f) == 9 for f in folder_names):
        return None
    names = wnid_names()
    unknown = [f for f in folder_names if f not in names]
    if unknown:
        raise ValueError(f"folders {', '.join(unknown[:3])} look like WordNet ids but are not ImageNet-1k classes")
    return [names[f] for f in folder_names]
