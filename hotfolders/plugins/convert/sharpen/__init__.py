"""Sharpening of the swapped face: decoders produce soft faces, frames are crisp."""
