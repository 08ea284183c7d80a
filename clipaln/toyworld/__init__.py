"""The toy world: a procedurally drawn world and the small open_clip CLIP pretrained on it."""

from .render import ACTIVITIES, GENDERS, OBJECTS, SIZE, render

__all__ = ["render", "OBJECTS", "ACTIVITIES", "GENDERS", "SIZE"]
