"""Files in: images (OpenCV, PIL for GIF, DICOM, 16-bit and multi-band TIFF), large slides read by windows and
their tiles (the tile grid, tissue on a thumbnail), intensity windows, masks and run-length encoding (whole,
band by band, or by windows of its runs), box geometry, box tables (CSV, COCO, YOLO), label tables, file
checks and the preprocessing cache.
Imports nothing of lightning_cv above it (only `errors`).
"""
