"""Files in: images (OpenCV, PIL for GIF, DICOM, 16-bit and multi-band TIFF), intensity windows, masks and
run-length encoding, box geometry, label tables, file checks and the preprocessing cache.
Imports nothing of lightning_cv above it (only `errors`).
"""
