"""The shapes world: a synthetic text-to-video world where every stage of Stream-R1 is measurable on a CPU.

``world`` renders prompts (``a {color} {shape} moving {direction}``) with optional degradations,
``detect`` reads what a video shows from its pixels, ``metrics`` scores it (Quality / Semantic /
Total). The models trained in the world and the build of the checkpoint set live beside them
(docs/shapes.md).
"""
