"""What Kermany's OCT data set looks like: its splits, its scans' height and their registration wedges' grey level.

Constants only, no imports: ingest reads this layout, the phantom imitates it, calibration measures it.
"""

SPLITS = ("train", "val", "test")  # the split folders of the layout, and of a prepared data set
REFERENCE_HEIGHT = 496  # rows of a Spectralis B-scan in Kermany; the phantom and calibration give lengths in its px
WEDGE_LEVEL = 250  # registration wedges are pure white; JPEG rounding leaves them >= 250
