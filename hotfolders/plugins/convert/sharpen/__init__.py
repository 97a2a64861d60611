"""Sharpening of the swapped face: decoders produce soft faces, frames are crisp.

Each method is one module defining ``sharpen(image, radius=1.0) -> image`` on float32 RGB in
[0, 1]. ``radius`` is in frame pixels per model-output pixel: a 64 px face pasted at 200 px
needs a kernel three times wider to sharpen at the scale of the face's own detail.
"""
