"""Pictures for people: overlays of images, masks and boxes, contact sheets, confusion matrices, and the plots
and sections of the report that tasks contribute. May import `io`.
"""
